"""A vote cast over the API records the network it came from (curation's per-network budget;
issue 14, finding 7), as a keyed digest, never the address."""

from __future__ import annotations

import httpx

from store import queries
from tests.assistant.conftest import API_KEYS
from tests.assistant.test_api import auth, user_of


def test_a_vote_over_the_api_records_its_network(live, services) -> None:
    key = API_KEYS[0]
    with httpx.Client(base_url=live.url, headers=auth(key), timeout=60) as http:
        r = http.post(
            "/v1/chat/completions",
            json={
                "model": "assistant",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "Where do votes come from?"}],
            },
        )
        assert r.status_code == 200, r.text
        turn_id = r.json()["id"]
        r = http.post("/v1/feedback", json={"id": turn_id, "rating": "up"})
        assert r.status_code == 200, r.text
    (vote,) = [
        v
        for t in queries.rated_turns_since(services.db, None)
        if t.turn_id == turn_id
        for v in t.votes
    ]
    assert vote.user_id == user_of(key)
    assert vote.network is not None and "127.0.0" not in vote.network
    assert vote.voter_turns_before is not None and vote.voter_since is not None
