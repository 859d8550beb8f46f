"""A clean start: library noise is dropped at its own logger (real errors are kept), and
`main.py serve` prints one short summary and no traceback."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from assistant.http.startup import quiet_known_noise
from tests.assistant.conftest import free_port
from tests.conftest import REPO


def _emit(
    logger: str, message: str, exc: BaseException | None = None, level: int = logging.ERROR
) -> list[str]:
    """Log one record through the named logger; return what a handler on it received."""
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger(logger)
    handler = Catch()
    log.addHandler(handler)
    try:
        exc_info = (type(exc), exc, None) if exc else None
        log.handle(log.makeRecord(logger, level, __file__, 1, message, (), exc_info))
    finally:
        log.removeHandler(handler)
    return seen


def test_known_noise_is_dropped_and_real_errors_are_kept():
    quiet_known_noise()
    quiet_known_noise()  # idempotent
    grpc = "grpc._server"
    assert (
        _emit(
            grpc,
            "Exception calling application: Method not implemented!",
            NotImplementedError("Method not implemented!"),
        )
        == []
    )
    assert _emit(grpc, "Exception calling application: disk full", OSError("disk full")) == [
        "Exception calling application: disk full"
    ]
    bnb = "bitsandbytes.backends.cpu.ops"
    assert (
        _emit(
            bnb,
            "Failed to load CPU gemm_4bit_forward from kernels-community: No module "
            "named 'kernels'. Please make sure",
            level=logging.WARNING,
        )
        == []
    )
    assert _emit(bnb, "something else broke", level=logging.WARNING) == ["something else broke"]
    # not globally: the same text on another logger still shows
    assert _emit(
        "pymilvus", "Method not implemented!", NotImplementedError("Method not implemented!")
    ) == ["Method not implemented!"]


@pytest.mark.real_model
def test_main_py_serve_starts_clean_and_says_where_everything_is(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "ASSISTANT_ADMIN_TOKEN": "clean-start-token-0123456789-abcdefgh"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "main.py"),
            "--data-dir",
            str(tmp_path / "data"),
            "serve",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        ready = False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(2)
        assert ready, "the server did not become healthy"
        answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)  # the chat page
        assert answer.status_code < 500
        time.sleep(75)  # idle past pymilvus' keepalive pings (too_many_pings came after ~60 s)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
    assert "Traceback" not in output, output
    assert "too_many_pings" not in output and "Method not implemented" not in output, output
    assert "kernels" not in output, output
    url = f"http://localhost:{port}/"
    assert f"Assistant serving on {url}" in output
    assert "model      smollm2-135m-instruct (nf4 on cpu, served as " in output
    assert "adapters   production v0 (the bare base model)" in output
    assert "documents  8 sources" in output  # the bundled user guide
    assert f"console    {url}console/ (sign in with the token in $ASSISTANT_ADMIN_TOKEN)" in output
