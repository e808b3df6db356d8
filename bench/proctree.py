"""The processes a benchmark starts, as /proc shows them (Linux only).

A peerledger command is often more than one process: `ingest` of a large
file projects in a second process, `serve` runs a writer and a projector
beside its front.  What one command costs is what its whole tree costs, so
the benchmarks read every process's `/proc/PID/stat` (one read gives its
parent, CPU time, resident size and start time) and follow the parent links
down from the process they started.  /proc has no cheaper way to find
descendants on this kernel (`/proc/PID/task/TID/children` is not built in).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class Proc:
    """One process as `/proc/PID/stat` describes it."""

    pid: int
    ppid: int
    state: str  # R, S, D, Z (a zombie: exited, not yet reaped), …
    cpu_s: float  # user + system
    rss_bytes: int
    started_ticks: int  # since boot: with the pid, names a process even after its pid is reused

    @property
    def identity(self) -> tuple[int, int]:
        return self.pid, self.started_ticks


def read_proc(pid: int) -> Proc | None:
    """The process `pid`, or None if there is none (it exited meanwhile)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the parenthesised command name, which may itself hold
    # spaces and parentheses: state (field 3), ppid (4), …, utime (14),
    # stime (15), …, starttime (22), vsize (23), rss in pages (24).
    fields = stat[stat.rindex(")") + 2:].split()
    return Proc(pid=pid, ppid=int(fields[1]), state=fields[0],
                cpu_s=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S,
                rss_bytes=int(fields[21]) * PAGE_BYTES, started_ticks=int(fields[19]))


def all_procs() -> dict[int, Proc]:
    """Every process on the machine, by pid."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := read_proc(int(entry))) is not None:
            procs[proc.pid] = proc
    return procs


def tree(root_pid: int, procs: dict[int, Proc] | None = None) -> list[Proc]:
    """`root_pid` and its descendants, from `procs` or a fresh read of /proc;
    empty if `root_pid` is gone.  Zombies are in it: their resident size is
    0, their CPU time was spent."""
    procs = all_procs() if procs is None else procs
    if root_pid not in procs:
        return []
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(procs[pid])
        todo.extend(children.get(pid, ()))
    return found


def alive(identities: set[tuple[int, int]]) -> list[Proc]:
    """Those of the processes named by (pid, start time) that still run
    (zombies count as ended)."""
    out = []
    for pid, started in sorted(identities):
        proc = read_proc(pid)
        if proc is not None and proc.started_ticks == started and proc.state != "Z":
            out.append(proc)
    return out


def command_line(pid: int) -> str:
    """The command line of `pid`, its arguments joined by spaces ("" if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
