"""Servers the HTTP edge tests (test_edge.py, test_edge_sessions.py) attack: more servers on
the live server's model worker, each with its own database and identities, and the fixtures
built on them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import config as config_mod
from assistant.http.identity import Identity, load_secret
from tests.assistant.conftest import API_KEYS, RunningServer, run_server, server_config

ALICE = API_KEYS[0]
ADMIN_ENV = "TEST_EDGE_ADMIN_TOKEN"
ADMIN_TOKEN = "edge-admin-token-0123456789-abcdefghij"
MESSAGES = [{"role": "user", "content": "hi"}]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def edge_server(
    live: RunningServer,
    root: Path,
    *,
    users: dict[str, str] | None = None,
    admin: bool = False,
    **server: object,
) -> tuple[RunningServer, object]:
    """Another server on the live server's model worker: its own database and identities."""
    from assistant.turns.service import build_services

    cfg = server_config(
        root / "data", Path(live.services.cfg.model.base), admin_token_env=ADMIN_ENV, **server
    )
    cfg = config_mod.with_overrides(cfg, schedule={"enabled": False})
    services = build_services(cfg, generator=live.services.generator)
    services.identity = Identity(
        load_secret(cfg.data_dir),
        users=users,
        login_attempts_per_minute=cfg.server.login_attempts_per_minute,
    )
    if admin:
        from training.loop.operator import attach_learning_loop

        os.environ[ADMIN_ENV] = ADMIN_TOKEN
        attach_learning_loop(services)
    return run_server(services), services


def stop_server(running: RunningServer, services: object) -> None:
    running.stop()
    for extension in services.extensions:  # type: ignore[attr-defined]
        extension.stop()
    services.db.close()  # type: ignore[attr-defined]  # the generator is the live server's


@pytest.fixture(scope="module")
def anon(live, tmp_path_factory) -> Iterator[RunningServer]:
    """No API keys, no logins, the admin API and console attached."""
    running, services = edge_server(
        live, tmp_path_factory.mktemp("anon"), admin=True, login_attempts_per_minute=3
    )
    yield running
    stop_server(running, services)
    os.environ.pop(ADMIN_ENV, None)


@pytest.fixture(scope="module")
def logins(live, tmp_path_factory) -> Iterator[RunningServer]:
    running, services = edge_server(
        live,
        tmp_path_factory.mktemp("logins"),
        users={"alice": "wonderland"},
        login_attempts_per_minute=3,
    )
    yield running
    stop_server(running, services)
