"""The operator console and admin API on the live server (tiny model) with the learning loop
attached: authentication, live rollout, roll back from a real browser, bad operator input."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store import registry
from tests.assistant.conftest import RunningServer, run_server, server_config
from tests.assistant.test_browser import ARGS, ARTIFACTS, TIMEOUT
from tests.tiny import build_adapter
from training.rollout.canary import abort, start_canary

TOKEN_ENV = "TEST_CONSOLE_ADMIN_TOKEN"
TOKEN = "operator-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def ops(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from assistant.turns.service import build_services
    from training.loop.operator import attach_learning_loop

    os.environ[TOKEN_ENV] = TOKEN
    data = tmp_path_factory.mktemp("ops") / "data"
    cfg = server_config(
        data, tiny_model_dir, admin_token_env=TOKEN_ENV, login_attempts_per_minute=3
    )
    import config as config_mod

    cfg = config_mod.with_overrides(cfg, schedule={"enabled": False})
    services = build_services(cfg)
    attach_learning_loop(services)
    running = run_server(services)
    yield running
    running.stop()
    services.close()
    os.environ.pop(TOKEN_ENV, None)


def new_canary(services, seed: int) -> int:
    """A real (random) adapter registered, validated in name only, and started as canary."""
    cfg, db = services.cfg, services.db
    folder = build_adapter(Path(cfg.model.base), cfg.data_dir / "adapters" / f"test-{seed}", seed)
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
    start_canary(cfg, db, version, actor="test", reason="passed validation")
    return version


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_admin_api_refuses_missing_and_forged_tokens(ops):
    with ops.client() as c:
        assert c.get("/admin/overview").status_code == 401
        assert c.get("/admin/overview", headers=auth("forged")).status_code == 401
        assert c.post("/admin/actions/pause", headers={"Authorization": TOKEN}).status_code == 401
        ok = c.get("/admin/overview", headers=auth())
        assert ok.status_code == 200 and "adapters" in ok.json()
        unknown = c.post("/admin/actions/explode", headers=auth())
        assert unknown.status_code == 404 and "unknown action" in unknown.json()["detail"]


def test_operator_actions_without_a_canary_are_refused_clearly(ops):
    with ops.client() as c:
        for action in ("promote", "rollback", "pause", "resume"):
            r = c.post(f"/admin/actions/{action}", headers=auth())
            assert r.status_code == 409, (action, r.text)
            assert "no canary rollout is running" in r.json()["detail"]


def test_admin_api_pause_resume_and_abort_twice(ops):
    version = new_canary(ops.services, seed=11)
    with ops.client() as c:
        assert (
            c.post(
                "/admin/actions/pause", headers=auth(), json={"reason": "looking at it"}
            ).status_code
            == 200
        )
        overview = c.get("/admin/overview", headers=auth()).json()
        assert overview["active_rollout"]["rollout"]["status"] == "paused"
        assert c.post("/admin/actions/resume", headers=auth()).status_code == 200
        assert c.post("/admin/actions/rollback", headers=auth()).status_code == 200
        again = c.post("/admin/actions/rollback", headers=auth())
        assert again.status_code == 409
    db = ops.services.db
    assert registry.get_adapter(db, version).status == "rolled_back"
    who = {(e.actor, e.action) for e in registry.list_events(db, limit=20)}
    assert ("operator:api", "rollout.pause") in who and ("operator:api", "rollout.rollback") in who


def test_a_tampered_adapter_path_is_never_loaded(ops, tmp_path):
    services = ops.services
    outside = build_adapter(Path(services.cfg.model.base), tmp_path / "outside", seed=5)
    db = services.db
    version = registry.register_adapter(
        db,
        parent=0,
        base_model="tiny",
        path=str(outside),
        dataset_id=None,
        train_config={},
        actor="attacker",
    )
    registry.set_status(db, version, "candidate", actor="test", reason="t")
    start_canary(services.cfg, db, version, actor="test", reason="t")
    services.chat.state.invalidate()
    state = services.chat.state()
    assert state.canary_version is None  # refused: it lies outside data_dir/adapters
    assert f"v{version}" not in services.generator.adapter_names()
    abort(db, actor="test", reason="test cleanup")
    assert registry.get_adapter(db, version).status == "rolled_back"


@pytest.mark.browser
def test_console_in_a_browser_login_see_the_rollout_and_roll_back(ops):
    from playwright.sync_api import expect, sync_playwright

    services = ops.services
    version = new_canary(services, seed=21)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        try:
            anonymous = browser.new_page()
            anonymous.goto(ops.url + "/console/")
            expect(anonymous.get_by_role("heading", name="Operator console")).to_be_visible()
            assert "/operator/login" in anonymous.url  # refused: sent to sign in
            assert anonymous.get_by_text("Canary v").count() == 0
            with httpx.Client(base_url=ops.url) as c:
                assert c.get("/console/gradio_api/info").status_code == 401
                assert c.get("/console/config").status_code == 401

            page = browser.new_page()
            page.goto(ops.url + "/operator/login")
            page.fill("input[name=token]", "wrong-token")
            page.click("#sign-in")
            expect(page.get_by_text("wrong operator token")).to_be_visible()
            page.fill("input[name=token]", TOKEN)
            page.click("#sign-in")
            page.wait_for_url("**/console/", timeout=TIMEOUT)
            expect(page.get_by_text(f"Canary v{version}")).to_be_visible(timeout=TIMEOUT)
            expect(page.locator("#adapters")).to_contain_text("canary", timeout=TIMEOUT)
            page.get_by_label("Reason (recorded in the audit log)").fill("bad answers seen")
            page.click("#btn-rollback")
            expect(page.locator("#action-result")).to_contain_text("rolled back", timeout=TIMEOUT)
            expect(page.get_by_text("No canary rollout is running")).to_be_visible(timeout=TIMEOUT)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "console-rolled-back.png"), full_page=True)
        finally:
            browser.close()
    assert registry.get_adapter(services.db, version).status == "rolled_back"
    event = next(
        e for e in registry.list_events(services.db, limit=20) if e.action == "rollout.rollback"
    )
    assert event.actor == "operator:console" and event.detail["reason"] == "bad answers seen"


def test_login_attempts_are_limited(ops):
    with ops.client() as c:
        codes = [
            c.post("/operator/login", data={"token": f"guess-{i}"}).status_code for i in range(5)
        ]
        assert codes[0] == 401 and codes[-1] == 429
        first_refusal = codes.index(429)
        assert set(codes[first_refusal:]) == {429} and first_refusal <= 3
        # even the right token is refused while the address is over its limit
        assert c.post("/operator/login", data={"token": TOKEN}).status_code == 429
