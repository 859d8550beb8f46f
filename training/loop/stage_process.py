"""Running the train and validate stages as subprocesses of the same CLI, so a crash, an OOM
kill or a hang in training is a failed result for the caller, never the end of the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MAIN = Path(__file__).resolve().parents[2] / "main.py"
STDERR_TAIL_CHARS = 4000
TERM_GRACE_S = 10.0  # after SIGTERM, time to remove partial folders before SIGKILL


@dataclass(frozen=True)
class StageResult:
    """How a stage subprocess ended. exit_code is None when it had to be killed (timeout) or
    could not start; a negative code is the signal that killed it (e.g. -9)."""

    ok: bool
    exit_code: int | None
    timed_out: bool
    duration_s: float
    stderr_tail: str


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the stage's process group, then SIGKILL whatever is left after a grace."""
    for sig, wait in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stage_env() -> dict[str, str]:
    """The stage's environment: ours, plus OMP_WAIT_POLICY=PASSIVE unless set.

    The stage shares a few cores with the server. OpenMP's default busy-waiting then makes
    every small torch op wait for a descheduled thread: measured on the 2-core host with one
    core busy, a forward pass went from 0.44 s to 7 s and a training step from 3.3 s to 40 s.
    """
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def run_stage(
    args: list[str], cfg_path: Path, timeout_s: float, progress_file: Path | None = None
) -> StageResult:
    """Run `python main.py --config CFG ARGS...` in its own process group and wait at most
    `timeout_s`. `progress_file` is passed on as --progress-file (train only). Any failure
    (non-zero exit, signal, timeout, failure to start) comes back as `ok=False` with the tail
    of stderr; nothing is raised."""
    command = [sys.executable, str(MAIN), "--config", str(cfg_path), *args]
    if progress_file is not None:
        command += ["--progress-file", str(progress_file)]
    started = time.monotonic()
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                cwd=str(MAIN.parent),
                env=stage_env(),
            )
        except OSError as exc:
            return StageResult(
                False,
                None,
                False,
                time.monotonic() - started,
                f"could not start {command[:3]}: {exc}",
            )
        timed_out = False
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            code = None
        except BaseException:  # the caller is going down: take the stage with it
            _kill_group(proc)
            raise
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
    if timed_out:
        tail += f"\nstage killed after its time limit of {timeout_s:.0f} s"
    return StageResult(code == 0, code, timed_out, time.monotonic() - started, tail)
