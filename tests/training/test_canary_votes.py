"""The canary decision cannot be steered: only routed turns count, one vote per user per arm per
rollout, and a cancelled stream is not an empty answer (issue 14, finding 8)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import config as config_mod
from assistant.generation.worker import Generator
from assistant.turns.chat import ChatService, ServingState, TurnHandle
from core.base_model import load_model
from store import registry, rollouts
from store.db import Database, open_database
from store.logs import create_conversation, log_turn
from store.queries import arm_stats, rating_series
from store.ratings import set_feedback
from training.rollout import canary


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "assistant.duckdb")
    yield database
    database.close()


@pytest.fixture(scope="module")
def generator(tiny_model_dir: Path, tiny_adapters: dict[str, Path]) -> Iterator[Generator]:
    loaded = load_model(str(tiny_model_dir), "nf4", "cpu")
    gen = Generator(
        loaded.model, loaded.tokenizer, context_window=512, adapter_root=tiny_adapters["a"].parent
    )
    gen.load_adapter("v1", tiny_adapters["a"])
    yield gen
    gen.close()


def start(cfg: config_mod.Config, db: Database, tmp_path: Path) -> str:
    version = registry.register_adapter(
        db,
        parent=0,
        base_model="tiny",
        path=str(tmp_path / "adapter"),
        dataset_id=None,
        train_config={},
        actor="test",
    )
    registry.set_status(db, version, "candidate", actor="test", reason="trained")
    assert version == 1
    return canary.start_canary(cfg, db, version, actor="test", reason="passed validation")


def chat(
    cfg: config_mod.Config,
    db: Database,
    generator: Generator,
    rollout_id: str,
    weight: float = 0.1,
    max_new_tokens: int = 3,
) -> ChatService:
    cfg = config_mod.with_overrides(
        cfg, model={"max_new_tokens": max_new_tokens}, retrieval={"top_k": 0}
    )
    return ChatService(
        cfg,
        db,
        generator,
        None,
        lambda: ServingState(
            production_version=0, canary_version=1, rollout_id=rollout_id, canary_weight=weight
        ),
    )


def routed_turn(
    db: Database,
    user: str,
    rollout_id: str,
    arm: str,
    *,
    answer: str = "ok",
    finish_reason: str = "stop",
) -> str:
    """A turn in a conversation the router sent to `arm` (what ChatService writes for
    model 'assistant')."""
    version = 1 if arm == "canary" else 0
    conv = create_conversation(
        db, user, "t", arm=arm, adapter_version=version, rollout_id=rollout_id
    )
    return log_turn(
        db,
        conversation_id=conv,
        user_id=user,
        question="q",
        answer=answer,
        messages=[{"role": "user", "content": "q"}],
        passages=[],
        adapter_version=version,
        arm=arm,
        prompt_tokens=3,
        completion_tokens=3,
        latency_ms=100.0,
        ttft_ms=10.0,
        finish_reason=finish_reason,
        error=None,
        rollout_id=rollout_id,
    )


def answered(handle: TurnHandle) -> str:
    """Read the whole streamed answer, as a client does, and return the logged turn id."""
    for _ in handle:
        pass
    return handle.finish()


def test_pinned_turns_do_not_count_toward_the_rollout(cfg, db, tmp_path, generator) -> None:
    rid = start(cfg, db, tmp_path)
    service = chat(cfg, db, generator, rid)
    # The attacker pins the canary and down-votes it, and pins production and up-votes it,
    # each in a conversation of its own (and once inside a routed conversation).
    for i in range(12):
        for model, rating in (("canary", "down"), ("production", "up")):
            handle = service.ask(f"mallory-{i}", f"question {i}", model=model)
            turn_id = answered(handle)
            set_feedback(db, turn_id=turn_id, user_id=f"mallory-{i}", rating=rating)
    routed = service.ask("alice", "a routed question")
    set_feedback(db, turn_id=answered(routed), user_id="alice", rating="up")
    pinned = service.ask(
        "alice",
        "now pinned",
        routed.conversation_id,
        model="production" if routed.arm == "canary" else "canary",
    )
    set_feedback(db, turn_id=answered(pinned), user_id="alice", rating="down")

    stats = arm_stats(db, rollout_id=rid)
    assert sum(s.down for s in stats.values()) == 0, stats  # every 👎 was on a pinned turn
    assert sum(s.up for s in stats.values()) == 1  # alice's routed 👍
    assert sum(s.turns for s in stats.values()) == 1
    assert stats[routed.arm].up == 1


def test_one_vote_per_user_per_arm_per_rollout(cfg, db, tmp_path) -> None:
    rid = start(cfg, db, tmp_path)
    for _ in range(40):  # one user, many routed canary conversations, each answer 👎
        set_feedback(
            db, turn_id=routed_turn(db, "mallory", rid, "canary"), user_id="mallory", rating="down"
        )
    for i in range(5):
        set_feedback(
            db,
            turn_id=routed_turn(db, f"honest-{i}", rid, "canary"),
            user_id=f"honest-{i}",
            rating="up",
        )
        set_feedback(
            db,
            turn_id=routed_turn(db, f"prod-{i}", rid, "production"),
            user_id=f"prod-{i}",
            rating="up",
        )
    stats = arm_stats(db, rollout_id=rid)
    assert (stats["canary"].up, stats["canary"].down) == (5, 1)
    assert (stats["production"].up, stats["production"].down) == (5, 0)
    assert stats["canary"].turns == 45  # guardrails still see every served turn
    # The console's per-version 👍 rate counts voters the same way.
    points = {p.adapter_version: (p.up, p.down) for p in rating_series(db, bucket="day")}
    assert points[1] == (5, 1)


def test_a_cancelled_stream_is_not_an_empty_answer(cfg, db, tmp_path, generator) -> None:
    rid = start(cfg, db, tmp_path)
    # Every routed conversation goes to the canary; answers long enough that the cancel
    # always lands while the stream runs (the question is logged before it is returned).
    service = chat(cfg, db, generator, rid, weight=1.0, max_new_tokens=400)
    for i in range(30):
        handle = service.ask(f"user-{i}", f"question {i}")
        handle.cancel()  # the reader stopped the stream before any text came
        handle.finish()
        assert handle.arm == "canary" and handle.result is not None
        assert handle.result.finish_reason == "cancelled"
    for i in range(30):
        routed_turn(db, f"prod-{i}", rid, "production")
    stats = arm_stats(db, rollout_id=rid)
    assert stats["canary"].empty_answers == 0
    now = rollouts.get_rollout(db, rid).started_at + timedelta(minutes=5)
    decision = canary.reading(cfg, db, now)
    assert decision is not None
    assert decision.decision.action != "rollback", decision.decision.reason
    # A real empty answer still counts.
    for i in range(30):
        routed_turn(db, f"blank-{i}", rid, "canary", answer=" ")
    assert arm_stats(db, rollout_id=rid)["canary"].empty_answers == 30
    assert canary.reading(cfg, db, now).decision.action == "rollback"  # type: ignore[union-attr]
