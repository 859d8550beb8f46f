"""/v1/feedback's 👎 reasons: accepted, stored with the vote, validated with a clear 400."""

from __future__ import annotations

import httpx
import pytest

from store import logs
from tests.assistant.conftest import API_KEYS
from tests.assistant.test_api import auth, user_of

ALICE, BOB = API_KEYS


@pytest.fixture(scope="module")
def answered(live) -> tuple[str, str]:
    """(conversation id, turn id) of one answer given to alice through the API."""
    r = httpx.post(
        live.url + "/v1/chat/completions",
        headers=auth(ALICE),
        timeout=60,
        json={"model": "assistant", "messages": [{"role": "user", "content": "Explain canaries."}]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return body["conversation_id"], body["id"]


def test_reasons_are_stored_with_the_vote(live, services, answered):
    conversation_id, turn_id = answered
    r = httpx.post(
        live.url + "/v1/feedback",
        headers=auth(ALICE),
        json={
            "id": turn_id,
            "rating": "down",
            "comment": "vague",
            "reasons": ["not_helpful", "too_long"],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["reasons"] == ["not_helpful", "too_long"]
    (turn,) = logs.conversation_turns(services.db, conversation_id, user_of(ALICE))
    assert [(v.rating, v.comment, v.reasons) for v in turn.votes] == [
        ("down", "vague", ("not_helpful", "too_long"))
    ]


@pytest.mark.parametrize(
    "reasons, message",
    [
        ("wrong", "'reasons' must be a list"),
        (["sideways"], "reason"),
        ([3], "reason"),
        (["wrong"] * 7, "at most 6"),
    ],
)
def test_bad_reasons_get_a_400_that_says_why_and_the_vote_is_unchanged(
    live, services, answered, reasons, message
):
    conversation_id, turn_id = answered
    before = logs.conversation_turns(services.db, conversation_id, user_of(ALICE))[0].votes
    r = httpx.post(
        live.url + "/v1/feedback",
        headers=auth(ALICE),
        json={"id": turn_id, "rating": "down", "reasons": reasons},
    )
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    assert logs.conversation_turns(services.db, conversation_id, user_of(ALICE))[0].votes == before


def test_reasons_with_a_thumbs_up_are_refused(live, answered):
    _, turn_id = answered
    r = httpx.post(
        live.url + "/v1/feedback",
        headers=auth(ALICE),
        json={"id": turn_id, "rating": "up", "reasons": ["wrong"]},
    )
    assert r.status_code == 400 and "thumbs down" in r.json()["error"]["message"]


def test_another_user_cannot_give_reasons_on_alices_answer(live, services, answered):
    conversation_id, turn_id = answered
    r = httpx.post(
        live.url + "/v1/feedback",
        headers=auth(BOB),
        json={"id": turn_id, "rating": "down", "reasons": ["unsafe"]},
    )
    assert r.status_code == 404, r.text
    votes = logs.conversation_turns(services.db, conversation_id, user_of(ALICE))[0].votes
    assert all(v.user_id == user_of(ALICE) for v in votes)
