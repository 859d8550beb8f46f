"""Start and stop a real Milvus standalone server (the `milvus` wheel) on loopback for tests.

`milvus-server` takes every listening port as a flag and, for each, binds the first free port
at or above the one given; we give it free ports found just before the start and read the
proxy port it settled on back from the config file it writes. The server runs in its own
process group so teardown can kill the wrapper and the Go binary together (it is slow to stop
on SIGTERM, and its data lives in a temp folder we throw away anyway).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PORT_FLAGS = (
    "etcd-port",
    "root-coord-port",
    "proxy-port",
    "proxy-internal-port",
    "query-coord-port",
    "query-node-port",
    "index-coord-port",
    "index-node-port",
    "data-coord-port",
    "data-node-port",
)


@dataclass
class MilvusServer:
    """A running server: its URI, process and folders."""

    uri: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    def stop(self, grace_s: float = 3.0) -> None:
        """Terminate the whole process group; kill it if it has not gone after `grace_s`."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # The Go binary is a child of the wrapper: kill whatever is left in the group.
        _signal_group(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _proxy_port(config_file: Path) -> int | None:
    """The `proxy.port` the server settled on (a two-space-indented key under `proxy:`)."""
    if not config_file.exists():
        return None
    in_proxy = False
    for line in config_file.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            in_proxy = line.startswith("proxy:")
        elif in_proxy and (match := re.match(r"^  port: (\d+)", line)):
            return int(match.group(1))
    return None


def _answers(uri: str) -> bool:
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri, timeout=3)
        client.list_collections(timeout=3)
        client.close()
        return True
    except Exception:
        return False


def start_milvus_server(data_dir: Path, timeout_s: float = 150.0) -> MilvusServer:
    """Start `milvus-server` with its data in `data_dir`; return once it answers gRPC calls.

    Raises RuntimeError (with the tail of the server log) when it exits early or is not ready
    within `timeout_s`; the process group is killed first either way.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("milvus-server")
    args = [str(exe), "--data", str(data_dir)]
    ports = _free_ports(len(PORT_FLAGS) + 1)
    for flag, port in zip(PORT_FLAGS, ports, strict=False):
        args += [f"--{flag}", str(port)]
    # The embedded etcd's peer port (2380) has no flag: an etcd config file read through the
    # ETCD_CONFIG_PATH environment variable moves it, so two servers can run side by side.
    etcd_config = data_dir / "embed-etcd.yaml"
    client, peer = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[-1]}"
    etcd_config.write_text(
        f"name: default\nlisten-client-urls: {client}\n"
        f"advertise-client-urls: {client}\nlisten-peer-urls: {peer}\n"
        f"initial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n"
    )
    env = {**os.environ, "ETCD_CONFIG_PATH": str(etcd_config)}
    log_path = data_dir / "server-wrapper.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = MilvusServer("", process, data_dir, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        port = _proxy_port(data_dir / "configs" / "milvus.yaml")
        if port is not None and _answers(f"http://127.0.0.1:{port}"):
            server.uri = f"http://127.0.0.1:{port}"
            return server
        time.sleep(1.0)
    server.stop(grace_s=0.5)
    tail = ""
    for log_file in (log_path, data_dir / "logs" / "milvus-stderr.log"):
        if log_file.exists():
            tail += log_file.read_text(errors="replace")[-1500:]
    raise RuntimeError(
        f"Milvus server did not become ready in {timeout_s:.0f}s "
        f"(exit code {process.poll()}); log tail:\n{tail}"
    )
