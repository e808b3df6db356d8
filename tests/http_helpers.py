"""A real `peerledger serve` on 127.0.0.1 for the HTTP tests (not TestClient).

The server runs as its own process group (`python -m ledger.cli serve`),
with its writer and projector children, on a free loopback port; tests talk
to it with httpx.  Leaving the context sends SIGTERM and waits: the server
stops its children on the way out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
from conftest import EXAMPLES

from ledger.http.tokens import create_token, create_tokens_table
from ledger.storage.store import Store

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_token(db_url: str, role: str, platform: str | None) -> str:
    with Store(db_url) as store:
        create_tokens_table(store)
        token, _ = create_token(store, role, platform, label=f"test {role}")
    return token


@dataclass
class Server:
    url: str
    db_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None, timeout_s: float = 120) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_server(db_url: str, log_dir: Path) -> Iterator[Server]:
    """`peerledger serve` on a free loopback port, ready (GET /readyz is 200)."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "serve", "--db", db_url, "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            stdout=log, stderr=subprocess.STDOUT, env=BASE_ENV, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", db_url, process, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def worked_example_server(tmp: Path) -> Iterator[Server]:
    """A running server whose platform `demo` holds the spec's worked example
    (posted as NDJSON by an admin), with that admin's token in `tokens`."""
    db_url = f"sqlite:///{tmp / 'ledger.db'}"
    admin = make_token(db_url, "admin", None)
    with running_server(db_url, tmp) as server:
        server.tokens["admin"] = admin
        with server.client(admin) as c:
            r = c.post("/v1/platforms/demo/events", content=(EXAMPLES / "worked.jsonl").read_bytes(),
                       headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 200, r.text
        yield server


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited ({server.process.returncode}):\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready in {READY_TIMEOUT_S} s:\n{server.log()}")
