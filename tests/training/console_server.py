"""A live server for the console page tests: the tiny model, real retrieval (all-MiniLM-L6-v2
on Milvus Lite in tmp), the learning loop attached, an admin token; and a signed-in browser."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import config as config_mod
from tests.assistant.conftest import RunningServer, run_server, server_config
from tests.assistant.test_browser import ARGS, ARTIFACTS, TIMEOUT

TOKEN_ENV = "TEST_PAGES_ADMIN_TOKEN"
TOKEN = "pages-operator-token-0123456789-abcdef"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start_pages_server(model_dir: Path, data: Path, **retrieval: object) -> RunningServer:
    """The server with the learning loop and documents; `retrieval` overrides (top_k=0: off)."""
    from assistant.turns.service import build_services
    from training.loop.operator import attach_learning_loop

    os.environ[TOKEN_ENV] = TOKEN
    cfg = server_config(data, model_dir, admin_token_env=TOKEN_ENV)
    cfg = config_mod.with_overrides(
        cfg, schedule={"enabled": False}, retrieval={"top_k": 4, "sample_docs": False, **retrieval}
    )
    services = build_services(cfg)
    attach_learning_loop(services)
    return run_server(services)


@pytest.fixture(scope="module")
def pages(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = start_pages_server(tiny_model_dir, tmp_path_factory.mktemp("pages") / "data")
    yield running
    running.stop()
    running.services.close()  # type: ignore[attr-defined]
    os.environ.pop(TOKEN_ENV, None)


@pytest.fixture(scope="module")
def console_page(pages: RunningServer) -> Iterator[Any]:
    """A Chromium page signed in to the console (one per test module)."""
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium"):
        pytest.fail("Chromium is not installed: apt-get install chromium (make setup-dev)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(TIMEOUT)
            page = context.new_page()
            page.goto(pages.url + "/operator/login")
            page.fill("input[name=token]", TOKEN)
            page.click("#sign-in")
            page.wait_for_url("**/console/")
            yield page
        finally:
            browser.close()


def open_tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
