"""Server fixtures: the real app (FastAPI + Gradio + /v1) on the tiny model, run by uvicorn in a
background thread on a free loopback port, shared by the server, API, UI and browser tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import config as config_mod
from tests.conftest import REPO

API_KEYS = ("key-alice-0123456789", "key-bob-9876543210")


def server_config(data_dir: Path, model_dir: Path, **server: object) -> config_mod.Config:
    """config.toml with the tiny model (fp32 for speed), short sampled answers (the random tiny
    model answers greedy decoding with newlines only) and limits no test run reaches."""
    return config_mod.load_config(
        REPO / "config.toml",
        overrides={
            "server": {"data_dir": str(data_dir), "rate_limit_per_minute": 1000, **server},
            "model": {
                "base": str(model_dir),
                "quantization": "fp32",
                "device": "cpu",
                "max_new_tokens": 12,
                "temperature": 1.0,
            },  # greedy: only newlines
            "retrieval": {"top_k": 0},
        },
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    services: object
    thread: threading.Thread
    server: object

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.server.should_exit = True  # type: ignore[attr-defined]
        self.thread.join(15)


def run_server(services: object) -> RunningServer:
    """Serve `services` with uvicorn on a free loopback port until `stop()`."""
    import uvicorn

    from assistant.http.app import create_app

    app = create_app(services)  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return RunningServer(f"http://127.0.0.1:{port}", services, thread, server)


@pytest.fixture(scope="session")
def live(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The whole server on the tiny model, with two API keys (alice's and bob's)."""
    from assistant.http.identity import Identity, load_secret
    from assistant.turns.service import build_services

    cfg = server_config(tmp_path_factory.mktemp("server") / "data", tiny_model_dir)
    services = build_services(cfg)
    services.identity = Identity(load_secret(cfg.data_dir), api_keys=list(API_KEYS))
    running = run_server(services)
    yield running
    running.stop()
    services.close()


@pytest.fixture(scope="session")
def services(live: RunningServer):  # noqa: ANN201
    """The live server's Services (its database, generator, chat service)."""
    return live.services
