"""The whole product on the real model: chats and votes through the API, an improvement cycle,
a validated candidate, a canary that receives its share of new conversations, votes that favour
it, promotion by the decision rule, and the new production adapter answering afterwards."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

import config as config_mod
from tests.assistant.conftest import run_server
from tests.conftest import REPO

pytestmark = pytest.mark.real_model

TOKEN_ENV = "TEST_LIFECYCLE_ADMIN_TOKEN"
TOKEN = "lifecycle-operator-token-0123456789"
# Many users: the canary's rule counts one vote per user per arm (store.queries.arm_stats), so
# each arm needs min_ratings_per_arm different voters.
KEYS = [f"lifecycle-user-key-{i:02d}-abcdefgh" for i in range(24)]
QUESTIONS = ["What is {}?", "Give me one fact about {}.", "Describe {} briefly."]
FACTS = {
    "the sun": "It is a star at the centre of our solar system.",
    "rain": "It is water that falls from clouds as drops.",
    "coffee": "It is a drink brewed from roasted coffee beans.",
    "owls": "They are birds that mostly hunt at night.",
    "trains": "They run on rails and carry people or goods.",
    "maps": "They are drawings of places that help you find your way.",
    "honey": "Bees make it from the nectar of flowers.",
    "snow": "It is frozen water that falls as flakes in winter.",
    "tea": "It is made by pouring hot water over dried leaves.",
    "bread": "It is baked from flour, water and yeast.",
    "the moon": "It orbits the Earth about once a month.",
    "rivers": "They carry fresh water from hills down to the sea.",
    "paper": "It is usually made from wood pulp.",
    "bees": "They pollinate flowers and live in hives.",
    "glass": "It is made by melting sand at a high temperature.",
    "salt": "It is a mineral used to season and preserve food.",
    "wind": "It is air moving from high to low pressure.",
    "clocks": "They measure and show the time of day.",
}
TOPICS = [
    "the sun",
    "rain",
    "coffee",
    "owls",
    "trains",
    "maps",
    "honey",
    "snow",
    "tea",
    "bread",
    "the moon",
    "rivers",
    "paper",
    "bees",
    "glass",
    "salt",
    "wind",
    "clocks",
    "forests",
    "music",
    "bridges",
    "islands",
    "stars",
    "volcanoes",
]


def ask(url: str, key: str, question: str) -> dict:
    # A seed per question: sampled answers, and so the dataset and the adapter trained on it,
    # are the same on every run (routing still depends on the random conversation ids).
    seed = sum(question.encode()) * 7919 % 2**31
    r = httpx.post(
        f"{url}/v1/chat/completions",
        timeout=300,
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "assistant",
            "seed": seed,
            "messages": [{"role": "user", "content": question}],
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


def rate(
    url: str, key: str, completion_id: str, rating: str, correction: str | None = None
) -> None:
    r = httpx.post(
        f"{url}/v1/feedback",
        timeout=60,
        headers={"Authorization": f"Bearer {key}"},
        json={"id": completion_id, "rating": rating, "correction": correction},
    )
    assert r.status_code == 200, r.text


def admin(url: str, method: str, path: str) -> dict:
    r = httpx.request(
        method, f"{url}/admin{path}", timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(predicate, timeout_s: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


# Two reruns: in 1 of 3 full runs here the 16-step adapter looped on one sanity prompt and was
# (rightly) rejected for repetition (the held-out split follows random conversation ids); once,
# under two xdist workers, it did so twice in a row. Three failures in a row fail the suite.
# Replayed outside the server on the same votes with 4 other splits (curation.seed 0..3), every
# adapter passed validation, repetition included.
@pytest.mark.flaky(reruns=2)
def test_ratings_become_a_canary_that_is_promoted(real_model_dir: Path, tmp_path: Path):
    from assistant.http.identity import Identity, load_secret
    from assistant.turns.service import build_services
    from training.loop.operator import attach_learning_loop

    os.environ[TOKEN_ENV] = TOKEN
    cfg = config_mod.load_config(
        REPO / "config.toml",
        overrides={
            "server": {
                "data_dir": str(tmp_path / "data"),
                "admin_token_env": TOKEN_ENV,
                "rate_limit_per_minute": 1000,
            },
            "model": {"base": str(real_model_dir), "max_new_tokens": 24, "temperature": 0.7},
            "retrieval": {"top_k": 0},
            # Users who just arrived: trust every identity (tests/training/test_vote_trust.py).
            "curation": {
                "max_share_per_user": 1.0,
                "min_voter_age_hours": 0.0,
                "min_voter_turns": 0,
            },
            "training": {
                "max_steps": 16,
                "batch_size": 2,
                "max_seq_tokens": 160,
                "eval_every": 4,
                "learning_rate": 5e-4,
                "start_from": "base",
            },
            "schedule": {"enabled": False},
            # 18 ratings leave ~4 held-out questions: the taste gate would (rightly) wait for more
            # evidence. This test is the vote-only path end to end; tests/training/test_cycle.py
            # drives the taste path (tiny model) and bench/loop.py measures it on the real model.
            "taste": {"enabled": False},
            "rollout": {
                "steps": [0.5],
                "min_ratings_per_arm": 6,
                "max_ratings_per_step": 200,
                "tick_seconds": 1,
                "guardrail_min_turns": 200,
            },
        },
    )
    services = build_services(cfg)
    services.identity = Identity(load_secret(cfg.data_dir), api_keys=KEYS)
    attach_learning_loop(services)
    server = run_server(services)
    url = server.url
    try:
        # 1. Users chat and rate through the API; the bare base model serves. They like some
        #    answers and correct the others, always in the same short style: something an
        #    adapter can learn, so validation sees a real held-out improvement.
        for i, topic in enumerate(TOPICS[:18]):
            key = KEYS[i % len(KEYS)]
            reply = ask(url, key, QUESTIONS[i % 3].format(topic))
            assert reply["arm"] == "production" and reply["adapter_version"] == 0
            if i % 4 == 0:
                rate(url, key, reply["id"], "up")
            else:
                rate(url, key, reply["id"], "down", correction=f"{FACTS[topic]} Hope this helps!")

        # 2. An operator runs a cycle: curate -> train -> validate -> canary.
        assert "cycle started" in admin(url, "POST", "/actions/cycle")["result"]
        overview = wait_for(
            lambda: (
                (o := admin(url, "GET", "/overview"))["cycles"]
                and o["cycles"][0]["status"] != "running"
                and o
            ),
            # With a bench run beside `make test` on the two cores, the cycle took 11 minutes and
            # the test timed out at 600 s while validation was passing the adapter.
            1200,
            "the cycle",
        )
        cycle = overview["cycles"][0]
        assert cycle["status"] == "succeeded", cycle["reason"]
        active = overview["active_rollout"]
        assert active, f"no canary started: {cycle['reason']}"
        canary = active["rollout"]["adapter_version"]
        assert canary >= 1

        # 3. New conversations split between the arms; users like the canary's answers more.
        #    The rule may promote as soon as each arm has min_ratings_per_arm (6) ratings.
        #    Voters per arm, not ratings, are what the rule counts.
        voters: dict[str, set[str]] = {"canary": set(), "production": set()}
        for i, topic in enumerate(TOPICS * 3):
            key = KEYS[i % len(KEYS)]
            reply = ask(url, key, f"Tell me about {topic}, part {i}.")
            if reply["arm"] == "canary":
                assert reply["adapter_version"] == canary
            elif reply["adapter_version"] != 0:
                break  # promoted meanwhile: production now serves the canary's adapter
            voters[reply["arm"]].add(key)
            rate(url, key, reply["id"], "up" if reply["arm"] == "canary" else "down")
            if min(len(v) for v in voters.values()) >= 8:
                break
        # Both arms received their share, from enough different users.
        assert min(len(v) for v in voters.values()) >= 6, voters

        # 4. The decision rule promotes the canary on its users' ratings (ticks every second).
        overview = wait_for(
            lambda: (o := admin(url, "GET", "/overview"))["production_version"] == canary and o,
            120,
            "promotion",
        )
        assert overview["rollouts"][0]["status"] == "promoted"
        assert overview["active_rollout"] is None

        # 5. The promoted adapter answers new conversations.
        reply = ask(url, KEYS[0], "What is a lighthouse?")
        assert reply["arm"] == "production" and reply["adapter_version"] == canary
        assert reply["choices"][0]["message"]["content"].strip()
        assert f"v{canary}" in services.generator.adapter_names()
    finally:
        server.stop()
        services.close()
        os.environ.pop(TOKEN_ENV, None)
