"""The OpenAI-compatible API, driven by the official `openai` client and raw HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from assistant.http.limits import RateLimiter
from store import logs
from tests.assistant.conftest import API_KEYS

ALICE, BOB = API_KEYS


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def alice(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=ALICE, max_retries=0)


def user_of(key: str) -> str:
    import hashlib

    return "api:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def test_openai_client_completion_stream_and_rating(live, services, alice):
    done = alice.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "What is a canary release?"}]
    )
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].message.content
    assert done.usage.completion_tokens > 0
    conversation_id = done.model_extra["conversation_id"]

    chunks = list(
        alice.chat.completions.create(
            model="assistant",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "And how is it rolled back?"}],
            extra_body={"conversation_id": conversation_id},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert {c.id for c in chunks} == {chunks[-1].model_extra["turn_id"]}  # the turn id, up front
    turn_id = chunks[-1].model_extra["turn_id"]

    # Both completions are logged as turns of one conversation, the stream continuing it.
    turns = logs.conversation_turns(services.db, conversation_id, user_of(ALICE))
    assert [t.id for t in turns] == [done.id, turn_id]
    assert turns[1].answer == text

    with httpx.Client(base_url=live.url, headers=auth(ALICE)) as http:
        r = http.post("/v1/feedback", json={"id": done.id, "rating": "up", "comment": "clear"})
        assert r.status_code == 200, r.text
        # The id the client saw on the stream's chunks rates the streamed turn.
        r = http.post(
            "/v1/feedback",
            json={"id": chunks[0].id, "rating": "down", "correction": "Point the router back."},
        )
        assert r.status_code == 200, r.text
        assert r.json()["id"] == turn_id
    turns = logs.conversation_turns(services.db, conversation_id, user_of(ALICE))
    assert [(v.rating, v.comment) for v in turns[0].votes] == [("up", "clear")]
    assert [(v.rating, v.correction) for v in turns[1].votes] == [
        ("down", "Point the router back.")
    ]


def test_earlier_messages_become_the_history_of_a_new_conversation(services, alice):
    done = alice.chat.completions.create(
        model="production",
        messages=[
            {"role": "system", "content": "ignored: the product's own system prompt is used"},
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Hello Ada."},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    (turn,) = logs.conversation_turns(
        services.db, done.model_extra["conversation_id"], user_of(ALICE)
    )
    assert [m["content"] for m in turn.messages[1:]] == [
        "My name is Ada.",
        "Hello Ada.",
        "What is my name?",
    ]
    assert "ignored" not in turn.messages[0]["content"]


def test_models_lists_the_serving_adapters_and_the_base(alice):
    ids = [m.id for m in alice.models.list()]
    assert ids[:2] == ["assistant", "production"] and ids[-1] == "base"
    assert "canary" not in ids  # no rollout is running


def test_unknown_model_is_404_with_an_openai_error(alice):
    with pytest.raises(openai.NotFoundError) as err:
        alice.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"
    assert "gpt-99" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError, match="no canary is running"):
        alice.chat.completions.create(model="canary", messages=[{"role": "user", "content": "hi"}])


def test_a_missing_or_wrong_key_is_refused(live):
    for headers in ({}, auth("wrong-key"), {"Authorization": "Basic abc"}):
        r = httpx.post(
            live.url + "/v1/chat/completions",
            headers=headers,
            json={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"


MESSAGES = [{"role": "user", "content": "hi"}]
BAD_BODIES = {
    "/v1/chat/completions": [
        {"model": 3, "messages": MESSAGES},
        {"model": "assistant", "messages": "hi"},
        {"model": "assistant", "messages": []},
        {"model": "assistant", "messages": [3]},
        {"model": "assistant", "messages": [{"role": "user", "content": 5}]},
        {"model": "assistant", "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": "assistant", "messages": [{"role": "assistant", "content": "hi"}]},
        {"model": "assistant", "messages": [{"role": "user", "content": [{"type": "image"}]}]},
        {"model": "assistant", "messages": MESSAGES, "stream": "yes"},
        {"model": "assistant", "messages": MESSAGES, "temperature": "hot"},
        {"model": "assistant", "messages": MESSAGES, "temperature": 9},
        {"model": "assistant", "messages": MESSAGES, "max_tokens": -1},
        {"model": "assistant", "messages": MESSAGES, "max_tokens": True},
        {"model": "assistant", "messages": MESSAGES, "n": 2},
        {"model": "assistant", "messages": MESSAGES, "conversation_id": 7},
        {"model": "assistant", "messages": MESSAGES, "conversation_id": "not-a-conversation"},
        {"model": "assistant", "messages": MESSAGES, "user": {"id": 1}},
        {"model": "assistant", "messages": [{"role": "user", "content": "   "}]},
        {"model": "assistant", "messages": [{"role": "user", "content": "\ud800"}]},
    ],
    "/v1/feedback": [
        {},
        {"id": 5, "rating": "up"},
        {"id": "x", "rating": "meh"},
        {"id": "x", "rating": "up", "comment": 3},
        {"id": "x", "rating": "up"},
        {"id": "x", "rating": "up", "correction": ["a"]},
        {"id": "x", "rating": None, "comment": "a comment without a vote"},
    ],
}


@pytest.mark.parametrize("route,body", [(r, b) for r, bodies in BAD_BODIES.items() for b in bodies])
def test_wrong_types_get_a_4xx_with_a_message(live, route, body):
    r = httpx.post(live.url + route, headers=auth(ALICE), content=json.dumps(body), timeout=60)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.json()["error"]["message"]


@pytest.mark.parametrize(
    "method,route",
    [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/feedback"),
        ("GET", "/v1/models"),
        ("GET", "/v1/conversations"),
        ("GET", "/v1/conversations/nope"),
    ],
)
@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b"", b"null"])
def test_malformed_json_on_every_route_is_a_4xx(live, method, route, content):
    r = httpx.request(
        method,
        live.url + route,
        content=content,
        headers={**auth(ALICE), "Content-Type": "application/json"},
    )
    if method == "GET":  # bodies are ignored; the route still answers sensibly
        assert r.status_code in (200, 404), r.text
    else:
        assert r.status_code == 400, r.text
        assert "JSON" in r.json()["error"]["message"]


def test_empty_and_overlong_messages_are_refused_with_the_limit(live, services):
    limit = services.cfg.server.max_message_chars
    with httpx.Client(base_url=live.url, headers=auth(ALICE), timeout=60) as http:
        r = http.post(
            "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": ""}]},
        )
        assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
        r = http.post(
            "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": "x" * 100_000}]},
        )
        assert r.status_code == 400
        assert f"{limit:,}" in r.json()["error"]["message"]


def test_html_in_a_message_is_stored_as_text(live, services, alice):
    attack = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    done = alice.chat.completions.create(
        model="base", messages=[{"role": "user", "content": attack}]
    )
    turns = logs.conversation_turns(
        services.db, done.model_extra["conversation_id"], user_of(ALICE)
    )
    assert turns[0].question == attack


def test_two_api_keys_cannot_see_or_rate_each_others_conversations(live, alice):
    done = alice.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "alice's secret question"}]
    )
    conversation_id = done.model_extra["conversation_id"]
    with httpx.Client(base_url=live.url, headers=auth(BOB), timeout=60) as bob:
        listed = bob.get("/v1/conversations").json()["data"]
        assert conversation_id not in [c["id"] for c in listed]
        assert bob.get(f"/v1/conversations/{conversation_id}").status_code == 404
        r = bob.post("/v1/feedback", json={"id": done.id, "rating": "down"})
        assert r.status_code == 404
        r = bob.post(
            "/v1/chat/completions",
            json={
                "model": "assistant",
                "conversation_id": conversation_id,
                "messages": [{"role": "user", "content": "continue alice's conversation"}],
            },
        )
        assert r.status_code == 404
    with httpx.Client(base_url=live.url, headers=auth(ALICE), timeout=60) as own:
        assert conversation_id in [c["id"] for c in own.get("/v1/conversations").json()["data"]]
        turns = own.get(f"/v1/conversations/{conversation_id}").json()["turns"]
        assert turns[0]["question"] == "alice's secret question"


def test_the_rate_limit_is_explained(live, services):
    saved = services.chat.limiter
    services.chat.limiter = RateLimiter(2)
    try:
        with httpx.Client(base_url=live.url, headers=auth(BOB), timeout=60) as bob:
            codes = [
                bob.post(
                    "/v1/chat/completions",
                    json={
                        "model": "base",
                        "max_tokens": 2,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                )
                for _ in range(3)
            ]
    finally:
        services.chat.limiter = saved
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert "2 per minute" in codes[-1].json()["error"]["message"]
