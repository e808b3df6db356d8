"""`peerledger cluster`: every process type of a deployment, on one machine.

deploy/ runs peerledger as separate processes (containers, pods): K
`consume` workers in one consumer group, P projection workers and the API.
This command starts the same process types with the same flags, as children
of one supervisor, for a laptop, a CI job or a one-machine installation:

    consume-I   consume --projector none --metrics-port BASE+I         (I < K)
    project-J   project --follow --metrics-port BASE+K+J               (J < P)
    api         serve --projector none --host HOST --port API_PORT

Why these flags: in a deployment the writers only append and the projection
workers (which split the platforms between them, `ledger.ingest.claims`) keep the
read models, so no platform is folded by two processes at once.

Like an orchestrator's restart policy, a child that exits is started again
after a back-off that doubles from RESTART_BACKOFF_MIN_SECONDS to
RESTART_BACKOFF_MAX_SECONDS (back to the minimum once a child has run for
BACKOFF_RESET_AFTER_SECONDS).  With `--no-restart` the first exit stops the
cluster instead, which then exits with that child's status (1 if a signal
killed it): a CI job sees the failure.

SIGTERM or SIGINT stops the writers first (the API and the consumers:
each finishes its batch, commits and leaves the group), then the projection
workers (each catches up with the log before it exits), each phase bounded
by STOP_GRACE_SECONDS before SIGKILL.  Each child runs in a session of its
own, so a terminal's Ctrl-C reaches only the supervisor, which decides that
order; on Linux each child is also told to die with the supervisor
(PR_SET_PDEATHSIG), so a killed supervisor leaves no orphans.

Children read the database URL from PEERLEDGER_DB (never from their command
line, where `ps` would show a password).  Their output goes to the
supervisor's stderr; its stdout carries only its own lifecycle lines (one
JSON object per line with `--json`), which tests read to find the children.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ledger.cli.common import DB_ENV, EXIT_FAILURE, EXIT_OK
from ledger.ops.runtime import die_with_parent

DEFAULT_CONSUMERS = 3
DEFAULT_PROJECTORS = 2
WORKERS_MAX = 64  # per type: far beyond one machine's cores
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
DEFAULT_METRICS_BASE_PORT = 9464
RESTART_BACKOFF_MIN_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 30.0
BACKOFF_RESET_AFTER_SECONDS = 60.0
STOP_GRACE_SECONDS = 60.0  # per phase; a consumer's batch and a projector's catch-up fit well within
SUPERVISE_INTERVAL_SECONDS = 0.2  # how often exits are noticed

WRITERS, PROJECTORS = 0, 1  # stop phases, in order


@dataclass
class Child:
    """One supervised process and its restart state."""

    name: str
    argv: list[str]
    phase: int
    port: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff_seconds: float = RESTART_BACKOFF_MIN_SECONDS
    restarts: int = 0


@dataclass
class ClusterSettings:
    """What `peerledger cluster` is told (see the module doc)."""

    db_url: str
    bootstrap_servers: str
    topic: str
    group: str = "peerledger"
    consumers: int = DEFAULT_CONSUMERS
    projectors: int = DEFAULT_PROJECTORS
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    metrics_base_port: int = DEFAULT_METRICS_BASE_PORT
    session_timeout_ms: int | None = None
    api_version: str | None = None
    restart: bool = True

    def __post_init__(self) -> None:
        for what, n in (("consumers", self.consumers), ("projectors", self.projectors)):
            if not 1 <= n <= WORKERS_MAX:
                raise ValueError(f"--{what} must be 1 to {WORKERS_MAX}")
        last_port = self.metrics_base_port + self.consumers + self.projectors - 1
        if not 1 <= self.metrics_base_port <= last_port <= 65535 or not 1 <= self.api_port <= 65535:
            raise ValueError("ports must be 1 to 65535 (metrics: base port + one per worker)")
        if self.metrics_base_port <= self.api_port <= last_port:
            raise ValueError(f"--api-port {self.api_port} falls among the metrics ports "
                             f"{self.metrics_base_port}-{last_port}")


def children(s: ClusterSettings) -> list[Child]:
    """The processes of the cluster, with their command lines."""
    cli = [sys.executable, "-m", "ledger.cli"]
    consume = ["consume", "--bootstrap-servers", s.bootstrap_servers, "--topic", s.topic, "--group", s.group,
               "--projector", "none"]
    if s.session_timeout_ms is not None:
        consume += ["--session-timeout-ms", str(s.session_timeout_ms)]
    if s.api_version is not None:
        consume += ["--api-version", s.api_version]
    out = []
    port = s.metrics_base_port
    for i in range(s.consumers):
        out.append(Child(f"consume-{i}", [*cli, *consume, "--metrics-port", str(port)], WRITERS, port))
        port += 1
    for j in range(s.projectors):
        out.append(Child(f"project-{j}", [*cli, "project", "--follow", "--metrics-port", str(port)], PROJECTORS,
                         port))
        port += 1
    out.append(Child("api", [*cli, "serve", "--projector", "none", "--host", s.api_host, "--port", str(s.api_port)],
                     WRITERS, s.api_port))
    return out


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """In the child, before exec: SIGTERM when the supervisor dies."""
    return functools.partial(die_with_parent, parent_pid, signal.SIGTERM)


class Cluster:
    """Starts, restarts and stops the children (see the module doc)."""

    def __init__(self, settings: ClusterSettings, report: Callable[[dict[str, Any]], None]) -> None:
        self.settings = settings
        self.children = children(settings)
        self._report = report
        # A plain flag: setting a threading.Event from a signal handler can
        # deadlock on the event's own lock, held by the interrupted main thread.
        self._stop_requested = False
        self._env = {**os.environ, DB_ENV: settings.db_url}

    def stop(self) -> None:
        """Ask the supervisor to stop the cluster (safe from a signal handler)."""
        self._stop_requested = True

    def run(self) -> int:
        """Supervise until stopped (EXIT_OK) or, without restarts, until a
        child exits (its status); every child is stopped on return."""
        status = EXIT_OK
        try:
            for child in self.children:
                self._start(child)
            while not self._stop_requested:
                time.sleep(SUPERVISE_INTERVAL_SECONDS)
                failed = self._supervise()
                if failed is not None:
                    status = failed
                    break
        finally:
            self._stop_all()
        return status

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv, env=self._env, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
            start_new_session=True, preexec_fn=_die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None)
        child.started_at = time.monotonic()
        child.restart_at = None
        self._report({"event": "started", "name": child.name, "pid": child.process.pid, "port": child.port,
                      "restarts": child.restarts, "argv": child.argv[3:]})

    def _supervise(self) -> int | None:
        """Notice exits and due restarts; without restarts, the status of the first exit."""
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and (code := child.process.poll()) is not None:
                self._report({"event": "exited", "name": child.name, "pid": child.process.pid, "status": code})
                child.process = None
                if not self.settings.restart:
                    return code if code > 0 else EXIT_FAILURE
                if now - child.started_at >= BACKOFF_RESET_AFTER_SECONDS:
                    child.backoff_seconds = RESTART_BACKOFF_MIN_SECONDS
                child.restart_at = now + child.backoff_seconds
                self._report({"event": "restarting", "name": child.name, "in_seconds": child.backoff_seconds})
                child.backoff_seconds = min(2 * child.backoff_seconds, RESTART_BACKOFF_MAX_SECONDS)
            elif child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)
        return None

    def _stop_all(self) -> None:
        for phase in (WRITERS, PROJECTORS):
            running = [c for c in self.children if c.phase == phase and c.process is not None]
            for child in running:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for child in running:
                assert child.process is not None
                try:
                    code = child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    code = child.process.wait()
                self._report({"event": "stopped", "name": child.name, "pid": child.process.pid, "status": code})
                child.process = None


# -- the command -----------------------------------------------------------------------


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add `cluster` to the `peerledger` subcommands (it serves every platform: no `plat`)."""
    del plat
    s = sub.add_parser(
        "cluster", parents=[common, jsonf],
        help="run the consume workers, projection workers and API of a deployment on this machine",
        description="Start K consume workers (one consumer group), P projection workers and the API as "
                    "supervised child processes, restart any that exits, stop them in order on "
                    "SIGTERM/SIGINT (see docs/scaling.md and deploy/README.md).")
    s.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT[,HOST:PORT...]")
    s.add_argument("--topic", required=True)
    s.add_argument("--group", default="peerledger", help="the consumers' group id (default peerledger)")
    s.add_argument("--consumers", type=int, default=DEFAULT_CONSUMERS, metavar="K",
                   help=f"consume workers (default {DEFAULT_CONSUMERS})")
    s.add_argument("--projectors", type=int, default=DEFAULT_PROJECTORS, metavar="P",
                   help=f"projection workers (default {DEFAULT_PROJECTORS})")
    s.add_argument("--api-host", default=DEFAULT_API_HOST, help=f"the API's address (default {DEFAULT_API_HOST})")
    s.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help=f"default {DEFAULT_API_PORT}")
    s.add_argument("--metrics-base-port", type=int, default=DEFAULT_METRICS_BASE_PORT, metavar="PORT",
                   help="consume-I serves /metrics, /healthz, /readyz on PORT+I, project-J on PORT+K+J "
                        f"(default {DEFAULT_METRICS_BASE_PORT})")
    s.add_argument("--session-timeout-ms", type=int, metavar="MS", help="passed to every consume worker")
    s.add_argument("--api-version", metavar="X.Y", help="passed to every consume worker")
    s.add_argument("--no-restart", action="store_true",
                   help="do not restart a child that exits: stop the cluster and exit with its status")
    s.set_defaults(func=cmd_cluster)


def cmd_cluster(args: argparse.Namespace) -> int:
    settings = ClusterSettings(
        db_url=args.db, bootstrap_servers=args.bootstrap_servers, topic=args.topic, group=args.group,
        consumers=args.consumers, projectors=args.projectors, api_host=args.api_host, api_port=args.api_port,
        metrics_base_port=args.metrics_base_port, session_timeout_ms=args.session_timeout_ms,
        api_version=args.api_version, restart=not args.no_restart)

    def report(event: dict[str, Any]) -> None:
        if args.json:
            line = orjson.dumps(event).decode()
        else:
            line = "cluster: " + " ".join(f"{k}={v}" for k, v in event.items() if k != "argv")
        print(line, flush=True)

    cluster = Cluster(settings, report)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: cluster.stop())
    return cluster.run()
