"""Feedback review (exclude a vote from training), a training cycle's own page, and the live
rollout's evidence: through the admin API and in the console in a real browser."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import config as config_mod
from store import queries, registry, rollouts
from store.events import list_events
from store.logs import create_conversation, log_turn
from store.ratings import set_feedback
from tests.tiny import build_adapter
from tests.training import console_server
from tests.training.console_server import auth, open_tab, screenshot
from training.loop.cycle import run_cycle
from training.rollout.canary import abort, start_canary

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]

pages = console_server.pages  # the module's live server (a fixture)
console_page = console_server.console_page  # a signed-in browser page (a fixture)


def rated_turn(
    db,
    user: str,
    question: str,
    answer: str,
    rating: str,
    *,  # noqa: ANN001
    arm: str = "production",
    version: int = 0,
    rollout_id: str | None = None,
    comment: str | None = None,
    correction: str | None = None,
) -> str:
    conv = create_conversation(
        db, user, "t", arm=arm, adapter_version=version, rollout_id=rollout_id
    )
    turn = log_turn(
        db,
        conversation_id=conv,
        user_id=user,
        question=question,
        answer=answer,
        messages=[{"role": "user", "content": question}],
        passages=[],
        adapter_version=version,
        arm=arm,
        prompt_tokens=20,
        completion_tokens=6,
        latency_ms=50.0,
        ttft_ms=5.0,
        finish_reason="stop",
        error=None,
    )
    set_feedback(
        db, turn_id=turn, user_id=user, rating=rating, comment=comment, correction=correction
    )
    return turn


@pytest.fixture(scope="module")
def seeded(pages) -> dict[str, str]:
    """17 rated answers (a quarter 👎, one a duplicate), two 👎 with a comment and a
    correction."""
    db = pages.services.db
    turns = {}
    for i in range(16):
        colour = COLOURS[i % len(COLOURS)]
        turns[f"t{i}"] = rated_turn(
            db,
            f"user-{i}",
            f"What colour is item number {i}?",
            f"Item {i} is {colour}.",
            "up" if i % 4 else "down",
        )
    # the same question and answer again, from another user: curation drops it as a duplicate
    turns["duplicate"] = rated_turn(
        db, "user-dup", "What colour is item number 1?", f"Item 1 is {COLOURS[1]}.", "up"
    )
    turns["rambling"] = rated_turn(
        db,
        "user-ramble",
        "How do I reset my password?",
        "Well, passwords are " * 20,
        "down",
        comment="Far too long and rambling, never says where the button is",
    )
    turns["wrong"] = rated_turn(
        db,
        "user-wrong",
        "What is the capital of Australia?",
        "Sydney.",
        "down",
        comment="Wrong city",
        correction="Canberra is the capital of Australia.",
    )
    return turns


def votes_of(client, **params) -> list[dict]:  # noqa: ANN001
    r = client.get("/admin/feedback", headers=auth(), params=params)
    assert r.status_code == 200, r.text
    return r.json()["votes"]


def test_feedback_review_api_filters_and_refuses_bad_input(pages, seeded):
    with pages.client() as c:
        assert c.get("/admin/feedback").status_code == 401
        assert c.post("/admin/feedback/x:y/exclude").status_code == 401
        downs = votes_of(c)
        assert {v["turn_id"] for v in downs} >= {seeded["rambling"], seeded["wrong"]}
        assert all(v["rating"] == "down" for v in downs)
        wrong = next(v for v in downs if v["turn_id"] == seeded["wrong"])
        assert wrong["correction"] == "Canberra is the capital of Australia."
        assert "user-wrong" not in str(downs)  # users appear only as a hash
        assert [v["turn_id"] for v in votes_of(c, text="RAMBLING")] == [seeded["rambling"]]
        assert votes_of(c, version=7) == []
        assert len(votes_of(c, rating="any", since_days=1)) == 19
        for params, code in [
            ({"rating": "sideways"}, 400),
            ({"since_days": -1}, 422),
            ({"limit": 10_000}, 422),
            ({"version": "v1"}, 422),
        ]:
            r = c.get("/admin/feedback", headers=auth(), params=params)
            assert r.status_code == code, (params, r.text)
            assert r.json()["detail"]
        r = c.post("/admin/feedback/not-a-vote/exclude", headers=auth())
        assert r.status_code == 400 and "vote_id" in r.json()["detail"]
        r = c.post(f"/admin/feedback/{seeded['wrong']}:0123456789abcdef/exclude", headers=auth())
        assert r.status_code == 404 and "no vote" in r.json()["detail"]
        r = c.post(f"/admin/feedback/{wrong['vote_id']}/delete", headers=auth())
        assert r.status_code == 404


def test_an_excluded_vote_leaves_curation_and_is_audited(pages, seeded):
    db = pages.services.db
    with pages.client() as c:
        vote = next(v for v in votes_of(c) if v["turn_id"] == seeded["rambling"])
        r = c.post(
            f"/admin/feedback/{vote['vote_id']}/exclude",
            headers=auth(),
            json={"reason": "spam test account"},
        )
        assert r.status_code == 200 and "excluded from training" in r.json()["result"]
        again = c.post(f"/admin/feedback/{vote['vote_id']}/exclude", headers=auth())
        assert "already" in again.json()["result"]
        shown = next(v for v in votes_of(c) if v["turn_id"] == seeded["rambling"])
        assert shown["excluded"] and shown["excluded_because"] == "spam test account"
    curated = {t.turn_id for t in queries.rated_turns_since(db, None)}
    assert seeded["rambling"] not in curated and seeded["wrong"] in curated
    event = next(e for e in list_events(db, limit=20) if e.action == "feedback.exclude")
    assert event.actor == "operator:api" and event.subject == f"turn:{seeded['rambling']}"
    assert event.detail["reason"] == "spam test account"
    with pages.client() as c:
        c.post(f"/admin/feedback/{vote['vote_id']}/include", headers=auth())
    assert seeded["rambling"] in {t.turn_id for t in queries.rated_turns_since(db, None)}


@pytest.mark.browser
def test_feedback_tab_shows_dislikes_and_excludes_one(pages, seeded, console_page):
    from playwright.sync_api import expect

    page = console_page
    page.reload()
    open_tab(page, "Feedback")
    table = page.locator("#fb-votes")
    expect(table).to_contain_text("Canberra is the capital of Australia.")
    expect(table).to_contain_text("Far too long and rambling")
    page.locator("#fb-words textarea, #fb-words input").first.fill("wrong city")
    page.click("#btn-fb-show")
    expect(table).not_to_contain_text("rambling")
    expected = next(v["vote_id"] for v in _votes(pages) if v["turn_id"] == seeded["wrong"])
    table.get_by_text("Wrong city").filter(visible=True).first.click()
    expect(page.locator("#fb-vote textarea, #fb-vote input").first).to_have_value(expected)
    page.locator("#fb-why textarea, #fb-why input").first.fill("correction is a test")
    page.click("#btn-fb-exclude")
    expect(page.locator("#fb-result")).to_contain_text("excluded from training")
    expect(table).to_contain_text("excluded: correction is a test")
    screenshot(page, "console-feedback-review.png")
    curated = {t.turn_id for t in queries.rated_turns_since(pages.services.db, None)}
    assert seeded["wrong"] not in curated
    event = next(
        e for e in list_events(pages.services.db, limit=20) if e.action == "feedback.exclude"
    )
    assert event.actor == "operator:console" and event.detail["reason"] == "correction is a test"


def _votes(pages) -> list[dict]:  # noqa: ANN001
    with pages.client() as c:
        return votes_of(c, rating="any")


@pytest.fixture(scope="module")
def finished_cycle(pages, seeded) -> str:
    """A real cycle on the tiny model over the seeded ratings: curate, train, validate."""
    services = pages.services
    cfg = config_mod.with_overrides(
        services.cfg,
        training={
            "max_steps": 4,
            "batch_size": 2,
            "max_seq_tokens": 96,
            "eval_every": 2,
            "max_minutes": 3.0,
        },
        validation={"sample_max_new_tokens": 8},
        curation={
            "max_share_per_user": 1.0,
            "holdout_fraction": 0.25,
            "min_voter_age_hours": 0,
            "min_voter_turns": 0,
        },
        taste={"enabled": False},  # a dozen votes: a taste model would make the cycle wait
    )  # the seeded users are new
    result = run_cycle(cfg, services.db, trigger="test", actor="test", force=True)
    assert result.status == "succeeded", result.reason
    active = rollouts.active_rollout(services.db)
    if active is not None:  # a canary of it: end it so the rollout test starts its own
        abort(services.db, actor="test", reason="test cleanup")
    return result.cycle_id


def test_cycle_report_api(pages, finished_cycle):
    with pages.client() as c:
        assert c.get(f"/admin/cycles/{finished_cycle}").status_code == 401
        missing = c.get("/admin/cycles/no-such-cycle", headers=auth())
        assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]
        report = c.get(f"/admin/cycles/{finished_cycle}", headers=auth()).json()
    assert report["dataset"]["counts"]["train"]["desirable"] >= 1
    assert report["dataset"]["dropped"], report["dataset"]  # left out, counted by reason
    checks = {ch["name"]: ch for ch in report["validation"]["checks"]}
    assert checks["heldout_loss"]["threshold"] is not None
    assert checks["heldout_loss"]["candidate"] is not None
    assert report["verdict"].startswith(("accepted", "rejected"))


@pytest.mark.browser
def test_cycle_page_in_a_browser(pages, finished_cycle, console_page):
    from playwright.sync_api import expect

    page = console_page
    page.goto(pages.url + f"/console/?cycle={finished_cycle}")
    open_tab(page, "Training cycles")
    report = page.locator("#cycle-report")
    expect(report).to_contain_text(f"Cycle {finished_cycle[:8]}")
    expect(report).to_contain_text("Dropped")
    expect(report).to_contain_text("duplicate")
    expect(report).to_contain_text("heldout_loss")
    expect(report).to_contain_text("threshold")
    with httpx.Client(base_url=pages.url) as c:
        verdict = c.get(f"/admin/cycles/{finished_cycle}", headers=auth()).json()["verdict"]
    word = verdict.split(":")[0]
    expect(report).to_contain_text(f"Verdict: {word}")
    screenshot(page, "console-cycle-page.png")


def test_rollout_evidence_in_the_overview(pages, seeded, tmp_path: Path):
    services = pages.services
    cfg, db = services.cfg, services.db
    folder = build_adapter(Path(cfg.model.base), cfg.data_dir / "adapters" / "evidence", 31)
    version = registry.register_adapter(
        db,
        parent=registry.production_version(db),
        base_model="tiny",
        path=str(folder),
        dataset_id=None,
        train_config={},
        actor="test",
    )
    registry.set_status(db, version, "candidate", actor="test", reason="trained")
    rollout_id = start_canary(cfg, db, version, actor="test", reason="passed validation")
    for i in range(12):
        rated_turn(
            db,
            f"canary-user-{i}",
            f"Question {i}?",
            "An answer.",
            "up" if i % 3 else "down",
            arm="canary",
            version=version,
            rollout_id=rollout_id,
        )
        rated_turn(
            db,
            f"prod-user-{i}",
            f"Question {i}?",
            "An answer.",
            "up" if i % 4 else "down",
            arm="production",
            version=0,
            rollout_id=rollout_id,
        )
    with httpx.Client(base_url=pages.url) as c:
        overview = c.get("/admin/overview", headers=auth()).json()
    active = overview["active_rollout"]
    assert active["needs"] == (
        "38 more canary ratings and 38 more production ratings before "
        "the 👍 rates are compared (each arm needs 50)"
    )
    arms = {p["arm"] for p in active["series"]}
    assert arms == {"canary", "production"}
    assert sum(p["up"] + p["down"] for p in active["series"]) == 24


@pytest.mark.browser
def test_rollout_evidence_in_a_browser(pages, console_page):
    from playwright.sync_api import expect

    page = console_page
    page.goto(pages.url + "/console/")
    open_tab(page, "Overview")
    rollout = page.locator("#rollout")
    expect(rollout).to_contain_text("Traffic split now: canary 10% · production 90%")
    expect(rollout).to_contain_text("To decide it needs: 38 more canary ratings")
    chart = page.locator("#evidence-chart")
    expect(chart).to_be_visible()
    expect(chart).to_contain_text("canary 67% (n=12)")
    expect(chart).to_contain_text("production 75% (n=12)")
    screenshot(page, "console-rollout-evidence.png")
    abort(pages.services.db, actor="test", reason="test cleanup")
