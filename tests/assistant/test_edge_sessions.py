"""The HTTP edge under attack (issue 14), identities and limits: anonymous API callers kept
apart, turns written when the question arrives, login attempts, concurrent streams and the
limiters' memory. Malformed input: test_edge.py."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from assistant.http.identity import Identity, load_secret
from assistant.http.limits import RateLimiter
from errors import BusyError, ConfigError
from store import logs
from tests.assistant.conftest import API_KEYS
from tests.assistant.edge_servers import (
    ADMIN_TOKEN,
    ALICE,
    MESSAGES,
    anon,
    auth,
    edge_server,
    stop_server,
)

__all__ = ["anon"]  # a module-scoped fixture: one server for this file


# ---- 3. anonymous API callers are separate --------------------------------------------------------


def test_two_anonymous_api_callers_cannot_see_or_touch_each_others_conversations(anon):
    with httpx.Client(base_url=anon.url, timeout=60) as first:
        done = first.post(
            "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": "my secret"}]},
        )
        assert done.status_code == 200, done.text
        key = done.headers["x-api-key"]
        conversation_id, turn_id = done.json()["conversation_id"], done.json()["id"]
    mine = {"Authorization": f"Bearer {key}"}
    # Another caller without a key, and one with a made-up key: each is someone else.
    for other in ({}, {"Authorization": "Bearer sk-no-key-required"}):
        with httpx.Client(base_url=anon.url, timeout=60, headers=other) as them:
            listed = them.get("/v1/conversations").json()["data"]
            assert conversation_id not in [c["id"] for c in listed]
            assert them.get(f"/v1/conversations/{conversation_id}").status_code == 404
            assert (
                them.post("/v1/feedback", json={"id": turn_id, "rating": "down"}).status_code == 404
            )
            r = them.post(
                "/v1/chat/completions",
                json={
                    "model": "assistant",
                    "conversation_id": conversation_id,
                    "messages": [{"role": "user", "content": "continue it"}],
                },
            )
            assert r.status_code == 404
    # The first caller, with the key it was issued, still owns everything.
    with httpx.Client(base_url=anon.url, timeout=60, headers=mine) as own:
        assert conversation_id in [c["id"] for c in own.get("/v1/conversations").json()["data"]]
        r = own.post("/v1/feedback", json={"id": turn_id, "rating": "up"})
        assert r.status_code == 200 and r.json()["rating"] == "up"
        again = own.post(
            "/v1/chat/completions",
            json={
                "model": "assistant",
                "conversation_id": conversation_id,
                "messages": [{"role": "user", "content": "and more"}],
            },
        )
        assert again.status_code == 200 and "x-api-key" not in again.headers
        turns = own.get(f"/v1/conversations/{conversation_id}").json()["turns"]
        assert [t["question"] for t in turns] == ["my secret", "and more"]
        assert turns[0]["rating"] == "up"


def test_an_issued_key_is_not_accepted_when_api_keys_are_configured(anon, live):
    key = httpx.post(
        anon.url + "/v1/chat/completions",
        timeout=60,
        json={"model": "base", "messages": MESSAGES, "max_tokens": 2},
    ).headers["x-api-key"]
    assert httpx.get(live.url + "/v1/models", headers=auth(key)).status_code == 401


# ---- 6. turns: written when the question arrives, nothing for refused requests ----------------------


def test_a_refused_request_writes_nothing(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    before = len(logs.list_conversations(services.db, user, limit=10_000))
    generator = services.generator
    saved = generator._max_queued
    generator._max_queued = 0
    try:
        r = httpx.post(
            live.url + "/v1/chat/completions",
            headers=auth(ALICE),
            timeout=60,
            json={"model": "assistant", "messages": [{"role": "user", "content": "refused"}]},
        )
    finally:
        generator._max_queued = saved
    assert r.status_code == 429, r.text
    assert len(logs.list_conversations(services.db, user, limit=10_000)) == before


def test_the_question_is_logged_when_it_arrives(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    handle = services.chat.ask(user, "logged before the answer")
    try:
        turns = logs.conversation_turns(services.db, handle.conversation_id, user)
        assert [(t.id, t.question, t.finish_reason) for t in turns] == [
            (handle.id, "logged before the answer", "pending")
        ]
    finally:
        services.finish_turn(handle, "api")
    (turn,) = logs.conversation_turns(services.db, handle.conversation_id, user)
    assert turn.finish_reason in ("stop", "length", "cancelled") and turn.id == handle.id


def test_a_crash_mid_answer_keeps_the_question(tmp_path):
    from store.db import open_database

    db = open_database(tmp_path / "crash.duckdb")
    try:
        conversation = logs.create_conversation(db, "u1", title="q")
        turn_id = logs.begin_turn(
            db,
            conversation_id=conversation,
            user_id="u1",
            question="what happens on a crash?",
            messages=[],
            passages=[],
            adapter_version=0,
            arm="production",
        )
        # the process dies here; the next start closes what was left unfinished
        assert logs.close_unfinished_turns(db) == 1
        (turn,) = logs.conversation_turns(db, conversation, "u1")
        assert turn.id == turn_id and turn.question == "what happens on a crash?"
        assert turn.finish_reason == "error" and "stopped" in (turn.error or "")
    finally:
        db.close()


# ---- 9. login attempts ----------------------------------------------------------------------------


def test_parallel_wrong_passwords_are_limited_before_they_are_checked(live, tmp_path):
    running, services = edge_server(
        live, tmp_path, users={"alice": "wonderland"}, login_attempts_per_minute=3
    )

    start = threading.Barrier(16)

    def attempt(i: int) -> int:
        with httpx.Client(base_url=running.url, timeout=60) as c:
            c.get("/login")  # connected before the race starts
            start.wait()
            return c.post(
                "/login", data={"username": "alice", "password": f"guess-{i}"}
            ).status_code

    try:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(attempt, range(16)))
    finally:
        stop_server(running, services)
    assert codes.count(401) <= 3, codes  # the limit is 3 a minute
    assert codes.count(429) >= 13, codes


def test_failed_logins_are_limited_per_account_name_too(tmp_path):
    identity = Identity(
        load_secret(tmp_path), users={"alice": "wonderland"}, login_attempts_per_minute=3
    )
    outcomes = []
    for i in range(8):  # a botnet: every guess from another address
        try:
            identity.login("alice", f"guess-{i}", client=f"10.0.0.{i}")
            outcomes.append("ok")
        except BusyError:
            outcomes.append("busy")
        except ValueError:
            outcomes.append("wrong")
    assert outcomes.count("wrong") <= 3 and outcomes[-1] == "busy"
    # another account is not locked by alice's attackers
    with pytest.raises(ValueError):
        identity.login("bob", "guess", client="10.0.1.1")


def test_the_admin_api_limits_wrong_tokens(live, tmp_path):
    running, services = edge_server(live, tmp_path, admin=True, login_attempts_per_minute=3)
    try:
        with running.client() as c:
            codes = [
                c.get("/admin/overview", headers=auth(f"guess-{i}")).status_code for i in range(6)
            ]
            assert codes[:3] == [401, 401, 401] and set(codes[3:]) == {429}
            refused = c.get("/admin/overview", headers=auth(ADMIN_TOKEN))
            assert refused.status_code == 429 and "wait" in refused.json()["detail"]
    finally:
        stop_server(running, services)


def test_every_operator_door_shares_one_token_attempt_limit(live, tmp_path):
    # The admin token opens the admin API's routes (documents and review included) and the
    # console's login: guesses through any of them count against one limit per address, so
    # spreading them over the doors does not multiply the guessing rate.
    running, services = edge_server(live, tmp_path, admin=True, login_attempts_per_minute=3)
    try:
        with running.client() as c:
            codes = [
                c.get("/admin/documents", headers=auth("guess-1")).status_code,
                c.get("/admin/feedback", headers=auth("guess-2")).status_code,
                c.post("/operator/login", data={"token": "guess-3"}).status_code,
                c.get("/admin/cycles/x", headers=auth("guess-4")).status_code,
                c.post("/operator/login", data={"token": "guess-5"}).status_code,
                c.get("/admin/overview", headers=auth(ADMIN_TOKEN)).status_code,
            ]
        assert codes == [401, 401, 401, 429, 429, 429], codes
    finally:
        stop_server(running, services)


def test_a_short_admin_token_is_refused_at_start():
    from assistant.http.operator_auth import OperatorAuth

    with pytest.raises(ConfigError, match="32"):
        OperatorAuth("s3cret")


# ---- 10. concurrent streams and limiter memory -------------------------------------------------


def test_concurrent_streams_per_user_are_limited(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    limit = services.cfg.server.max_streams_per_user
    handles = [services.chat.ask(user, f"stream {i}") for i in range(limit)]
    try:
        r = httpx.post(
            live.url + "/v1/chat/completions",
            headers=auth(ALICE),
            timeout=60,
            json={"model": "base", "messages": MESSAGES, "max_tokens": 2},
        )
        assert r.status_code == 429, r.text
        assert f"{limit} answers at once" in r.json()["error"]["message"]
        other = httpx.post(
            live.url + "/v1/chat/completions",
            headers=auth(API_KEYS[1]),
            timeout=60,
            json={"model": "base", "messages": MESSAGES, "max_tokens": 2},
        )
        assert other.status_code == 200
    finally:
        for h in handles:
            services.finish_turn(h, "api")
    again = httpx.post(
        live.url + "/v1/chat/completions",
        headers=auth(ALICE),
        timeout=60,
        json={"model": "base", "messages": MESSAGES, "max_tokens": 2},
    )
    assert again.status_code == 200, again.text


def test_a_stream_the_client_abandons_releases_its_slot(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    released = threading.Event()
    with httpx.Client(base_url=live.url, headers=auth(ALICE), timeout=60) as http:
        for _ in range(services.cfg.server.max_streams_per_user + 2):
            with http.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "base", "stream": True, "messages": MESSAGES},
            ) as r:
                assert r.status_code == 200
                next(r.iter_lines())  # read one event, then hang up
            for _ in range(400):  # the server notices the hang-up and cleans up
                if services.chat.streams.active(user) == 0:
                    break
                released.wait(0.05)
            assert services.chat.streams.active(user) == 0
        r = http.post("/v1/chat/completions", json={"model": "base", "messages": MESSAGES})
        assert r.status_code == 200


def test_limiter_state_forgets_idle_identities():
    now = [0.0]
    limiter = RateLimiter(5, clock=lambda: now[0])
    for i in range(10_000):
        limiter.check(f"anon-{i}")
    assert len(limiter) == 10_000
    now[0] += 61
    limiter.check("anon-new")
    assert len(limiter) == 1
    from assistant.http.limits import ConcurrencyLimiter

    streams = ConcurrencyLimiter(2)
    for i in range(1000):
        streams.acquire(f"u{i}")
        streams.release(f"u{i}")
    assert len(streams) == 0


def test_new_anonymous_api_callers_are_limited_per_address(live, tmp_path):
    """Fresh identities are free, so minting them is limited per address: keyless calls from
    one address share the per-user message rate, and a caller with its key is unaffected."""
    running, services = edge_server(live, tmp_path, rate_limit_per_minute=3)
    try:
        with running.client() as c:
            first = c.get("/v1/models")
            key = first.headers["x-api-key"]
            codes = [c.get("/v1/models").status_code for _ in range(4)]
            assert codes[:2] == [200, 200] and codes[-1] == 429, codes
            assert "new anonymous API callers" in c.get("/v1/models").json()["error"]["message"]
            assert c.get("/v1/models", headers=auth(key)).status_code == 200
    finally:
        stop_server(running, services)


def test_a_cancelled_turn_that_nobody_reads_is_still_completed(live, services):
    """A page that cancels before reading any of its answer (closed at once) must not keep the
    user's stream slot or leave the turn pending."""
    user = "api:" + __import__("hashlib").sha256(API_KEYS[1].encode()).hexdigest()[:16]
    handle = services.chat.ask(user, "cancelled before it was read")
    handle.cancel()
    waited = threading.Event()
    for _ in range(400):
        if services.chat.streams.active(user) == 0:
            break
        waited.wait(0.05)
    assert services.chat.streams.active(user) == 0
    (turn,) = logs.conversation_turns(services.db, handle.conversation_id, user)
    assert turn.finish_reason != "pending" and turn.question == "cancelled before it was read"


def test_an_answer_still_being_written_cannot_be_rated(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    handle = services.chat.ask(user, "rate me too early")
    try:
        r = httpx.post(
            live.url + "/v1/feedback", headers=auth(ALICE), json={"id": handle.id, "rating": "up"}
        )
        assert r.status_code == 400 and "still being written" in r.json()["error"]["message"]
    finally:
        services.finish_turn(handle, "api")
    r = httpx.post(
        live.url + "/v1/feedback", headers=auth(ALICE), json={"id": handle.id, "rating": "up"}
    )
    assert r.status_code == 200, r.text
