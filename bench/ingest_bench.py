#!/usr/bin/env python3
"""Ingest/replay benchmark for peerledger, on SQLite and PostgreSQL.

    make bench                                  # = scripts/ensure-postgres && .venv/bin/python bench/ingest_bench.py
    .venv/bin/python bench/ingest_bench.py --quick          # 20 000-event smoke run
    .venv/bin/python bench/ingest_bench.py --events 500000  # a longer stream

One realistic stream (`ledger.demo.generate.generate(seed, n, "bench")`, written
with `write_jsonl`; default 200 000 events, all acceptable) is measured,
each measurement on a fresh SQLite file or a fresh PostgreSQL database
(`peerledger_bench_<random>`, created on the server of PEERLEDGER_BENCH_PG,
else PEERLEDGER_TEST_PG, else postgresql://postgres@127.0.0.1:5432/test, and
dropped WITH (FORCE) at the end):

* ingest, end to end: `python -m ledger.cli ingest FILE --json --db URL` as a
  subprocess, wall clock (interpreter start, schema, appending, and the
  projector in its second process until the read models are at the head);
* append-only: `ledger.ingest.ingestor.Ingestor` over
  `batches(read_lines(FILE))`, no projector, timed in process (the file is
  read inside the timed section, the store is opened outside it);
* verify: `python -m ledger.cli verify --platform bench --db URL` as a
  subprocess, wall clock, on the databases the CLI ingest filled;
* replay (fold only): `ledger.storage.replay.replay(store, "bench")`, timed in process;
* plain eventsourcing: an `Application` whose one `Stream` aggregate per
  platform records each event's JSON line (`Recorded(line=...)`), with
  `app.save(aggregate)` after every event, i.e. one transaction per event,
  on a fresh SQLite file and a fresh PostgreSQL database; on a prefix of the
  stream (default 20 000 events, `--es-events`; 0 = the whole stream);
* raw sqlite3: `executemany` of the same JSON lines into a WAL-mode table
  (id TEXT PRIMARY KEY, line BLOB), 1000 rows and one commit per batch, at
  SQLite's default synchronous=FULL like the ledger's own SQLite store (the
  ids are extracted from the lines before the timed section);
* floors: the parse alone (`parse_event` and the leaf hash of every line)
  and the store's write alone (`Store.append` of the append-only run's rows,
  read back from its file, into a fresh SQLite file and PostgreSQL
  database); the notes print the ceiling the two leave for a writer.

Each in-process measurement runs in a fresh interpreter (this script with
`--worker`), so no measurement inherits another's heap, caches or
connections; the peerledger ones (append-only, replay) with the GC
thresholds every peerledger process sets (`ledger.ops.runtime.tune_gc`).  The table is printed as markdown and written, with the
machine, the date and the git revision, to bench/results/ingest.md and
bench/results/ingest.json (a `--quick` run writes ingest-quick.* instead, so
it never overwrites the full run's results).  `--profile` adds a cProfile of
the in-process append path (SQLite, first 20 000 events): the top functions
by cumulative time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform as platform_mod
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PLATFORM = "bench"
DEFAULT_EVENTS = 200_000
QUICK_EVENTS = 20_000
DEFAULT_ES_EVENTS = 20_000
PROFILE_EVENTS = 20_000
RAW_BATCH = 1000
SUBPROCESS_TIMEOUT_S = 3 * 3600
DEFAULT_PG = os.environ.get("PEERLEDGER_BENCH_PG") or os.environ.get(
    "PEERLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

TARGET_INGEST_SQLITE = 50_000
TARGET_INGEST_RAW_RATIO = 0.25
TARGET_INGEST_PG = 20_000
TARGET_REPLAY = 100_000


# --------------------------------------------------------------------------
# workers: one measurement each, in a fresh interpreter; print one JSON line
# --------------------------------------------------------------------------


def _islice_lines(path: str, limit: int) -> list[bytes]:
    out: list[bytes] = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                out.append(line.rstrip(b"\n"))
                if limit and len(out) >= limit:
                    break
    return out


def worker_append(spec: dict[str, Any]) -> dict[str, Any]:
    import gc
    import itertools

    from ledger.ingest.ingestor import ACCEPTED, Ingestor
    from ledger.ingest.sources import batches, read_lines
    from ledger.storage.store import Store

    limit = spec.get("limit") or None
    profile = spec.get("profile", False)
    counts: dict[str, int] = {}
    with Store(spec["db"]) as store:
        ingestor = Ingestor(store)
        gc.collect()

        def run() -> None:
            with open(spec["file"], "rb") as f:
                items = read_lines(f, spec["file"])
                if limit:
                    items = itertools.islice(items, limit)
                for batch in batches(items):
                    for outcome in ingestor.ingest(batch):
                        counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1

        if profile:
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.runcall(run)
            seconds = time.perf_counter() - t0
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf)
            stats.sort_stats("cumulative").print_stats(spec.get("top", 25))
            tottime = io.StringIO()
            pstats.Stats(prof, stream=tottime).sort_stats("tottime").print_stats(spec.get("top", 25))
            return {"events": counts.get(ACCEPTED, 0), "seconds": seconds, "counts": counts,
                    "cumulative": buf.getvalue(), "tottime": tottime.getvalue()}
        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
    return {"events": counts.get(ACCEPTED, 0), "seconds": seconds, "counts": counts}


def worker_parse(spec: dict[str, Any]) -> dict[str, Any]:
    """The shape stage alone: every line parsed, validated and made canonical
    (`ledger.contract.schema.parse_event`) and its leaf hashed, as the append path
    does before deciding; the file is read inside the timed section."""
    import gc

    from ledger.contract.schema import parse_event
    from ledger.ingest.sources import read_lines
    from projections.merkle import leaf_hash

    gc.collect()
    t0 = time.perf_counter()
    events = 0
    with open(spec["file"], "rb") as f:
        for offered in read_lines(f, spec["file"]):
            leaf_hash(parse_event(offered.payload).canonical)
            events += 1
    return {"events": events, "seconds": time.perf_counter() - t0}


def worker_store(spec: dict[str, Any]) -> dict[str, Any]:
    """The write floor: `Store.append` of the rows the append-only run
    appended (events, id records, Merkle nodes; read back from its SQLite
    file before the timed section) into a fresh database, in batches of
    `BATCH_MAX_EVENTS` events, with nothing parsed or decided."""
    import gc
    import sqlite3

    from ledger.ingest.sources import BATCH_MAX_EVENTS
    from ledger.storage.store import AppendBatch, Store

    source = sqlite3.connect(spec["source"])
    events = [tuple(row) for row in source.execute(
        "SELECT originator_id, originator_version, topic, state FROM peerledger_events "
        "ORDER BY originator_version")]
    ids = [tuple(row) for row in source.execute(
        "SELECT platform, event_id, seq, leaf_hash, effect_hash, accepted_at FROM peerledger_event_ids "
        "ORDER BY seq")]
    # A node completes when its last leaf is appended: leaves (idx + 1) * 2**level - 1.
    nodes = source.execute("SELECT platform, level, idx, hash FROM peerledger_merkle_nodes").fetchall()
    source.close()
    assert len(events) == len(ids) and [e.originator_version for e in events] == [r.seq for r in ids]
    per_batch: dict[int, list[tuple[str, int, int, bytes]]] = {}
    for node in nodes:
        last_seq = (node[2] + 1) << node[1]
        per_batch.setdefault((last_seq - 1) // BATCH_MAX_EVENTS, []).append(node)
    batches = [AppendBatch(events[i:i + BATCH_MAX_EVENTS], ids[i:i + BATCH_MAX_EVENTS], [],
                           per_batch.get(i // BATCH_MAX_EVENTS, []))
               for i in range(0, len(events), BATCH_MAX_EVENTS)]
    with Store(spec["db"]) as store:
        gc.collect()
        t0 = time.perf_counter()
        for batch in batches:
            store.append(batch)
        seconds = time.perf_counter() - t0
        assert store.head(PLATFORM) == len(events)
    return {"events": len(events), "seconds": seconds}


def worker_replay(spec: dict[str, Any]) -> dict[str, Any]:
    import gc

    from ledger.storage.replay import rebuild, scratch_store
    from ledger.storage.store import Store

    with Store(spec["db"]) as store, scratch_store() as scratch:
        gc.collect()
        t0 = time.perf_counter()
        replay = rebuild(store, scratch, PLATFORM)
        seconds = time.perf_counter() - t0
    return {"events": replay.seq, "seconds": seconds}


def worker_es(spec: dict[str, Any]) -> dict[str, Any]:
    import gc

    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Stream(Aggregate):
        """One platform's stream: each ledger event is one `Recorded` event."""

        def __init__(self, platform: str) -> None:
            self.platform = platform
            self.count = 0

        @event("Recorded")
        def record(self, line: str) -> None:
            self.count += 1

    class PlainLedger(Application):
        pass

    lines = [line.decode("utf-8") for line in _islice_lines(spec["file"], spec.get("limit", 0))]
    app = PlainLedger(env=spec["env"])
    gc.collect()
    t0 = time.perf_counter()
    stream = Stream(PLATFORM)
    app.save(stream)
    for line in lines:
        stream.record(line)
        app.save(stream)
    seconds = time.perf_counter() - t0
    stored = app.recorder.max_notification_id()
    assert stored == len(lines) + 1, (stored, len(lines))
    app.close()
    return {"events": len(lines), "seconds": seconds}


def worker_raw(spec: dict[str, Any]) -> dict[str, Any]:
    import gc
    import sqlite3

    import orjson

    lines = _islice_lines(spec["file"], 0)
    rows = [(orjson.loads(line)["id"], line) for line in lines]
    conn = sqlite3.connect(spec["path"], isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode == "wal", mode
    conn.execute("CREATE TABLE events (id TEXT PRIMARY KEY, line BLOB)")
    gc.collect()
    t0 = time.perf_counter()
    for i in range(0, len(rows), RAW_BATCH):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO events (id, line) VALUES (?, ?)", rows[i:i + RAW_BATCH])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - t0
    (count,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    conn.close()
    assert count == len(rows)
    return {"events": count, "seconds": seconds,
            "synchronous": "FULL (default)", "sqlite_version": sqlite3.sqlite_version}


WORKERS = {"append": worker_append, "replay": worker_replay, "es": worker_es, "raw": worker_raw,
           "parse": worker_parse, "store": worker_store}


# --------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of the processes a benchmark starts: this checkout's
    code first on their path, and no PEERLEDGER_DB (every command gets --db)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PEERLEDGER_DB", None)
    return env


def _run(cmd: list[str], cwd: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S)
    return time.perf_counter() - t0, proc


def _fail(what: str, proc: subprocess.CompletedProcess[str]) -> None:
    raise SystemExit(
        f"{what} failed (exit {proc.returncode})\n--- stdout ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr ---\n{proc.stderr[-4000:]}"
    )


def run_worker(kind: str, spec: dict[str, Any], cwd: str) -> dict[str, Any]:
    _, proc = _run([sys.executable, str(Path(__file__).resolve()), "--worker", kind,
                    "--spec", json.dumps(spec)], cwd)
    if proc.returncode != 0:
        _fail(f"worker {kind}", proc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli_ingest(path: str, url: str, n: int, cwd: str) -> dict[str, Any]:
    seconds, proc = _run([sys.executable, "-m", "ledger.cli", "ingest", path, "--json", "--db", url], cwd)
    if proc.returncode != 0:
        _fail(f"ingest into {url}", proc)
    summary = json.loads(proc.stdout)
    if summary["accepted"] != n:
        raise SystemExit(f"ingest into {url}: accepted {summary['accepted']} of {n}: {summary}")
    return {"events": summary["accepted"], "seconds": seconds}


def cli_project(url: str, n: int, cwd: str) -> dict[str, Any]:
    seconds, proc = _run([sys.executable, "-m", "ledger.cli", "project", "--db", url], cwd)
    if proc.returncode != 0 or f"projected {n} events" not in proc.stdout:
        _fail(f"project of {url}", proc)
    return {"events": n, "seconds": seconds}


def cli_startup(cwd: str) -> float:
    """Wall clock of starting the CLI's interpreter and importing it (best of 3)."""
    best = float("inf")
    for _ in range(3):
        seconds, proc = _run([sys.executable, "-c", "import ledger.cli"], cwd)
        if proc.returncode != 0:
            _fail("import ledger.cli", proc)
        best = min(best, seconds)
    return best


def cli_verify(url: str, n: int, cwd: str) -> dict[str, Any]:
    seconds, proc = _run([sys.executable, "-m", "ledger.cli", "verify", "--platform", PLATFORM,
                          "--db", url], cwd)
    if proc.returncode != 0 or f"OK {n} events" not in proc.stdout:
        _fail(f"verify of {url}", proc)
    return {"events": n, "seconds": seconds, "output": proc.stdout.strip()}


class PgServer:
    """Fresh databases on the benchmark's PostgreSQL server, dropped on close."""

    def __init__(self, base_url: str) -> None:
        import psycopg

        from ledger.storage.dialect import DbUrl

        parsed = DbUrl.parse(base_url)
        if parsed.pg is None:
            raise SystemExit(f"not a PostgreSQL URL: {base_url}")
        self.params = parsed.pg
        try:
            self.admin = psycopg.connect(autocommit=True, connect_timeout=10, **self.params)
        except psycopg.OperationalError as e:
            raise SystemExit(f"PostgreSQL at {base_url} is not reachable ({e}); run scripts/ensure-postgres "
                             "or pass --no-postgres") from e
        self.version = self.admin.execute("SHOW server_version").fetchone()[0]
        self.created: list[str] = []

    def create(self) -> str:
        name = f"peerledger_bench_{secrets.token_hex(6)}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name

    def url(self, name: str) -> str:
        p = self.params
        cred = p["user"] + (":" + p["password"] if p["password"] else "")
        return f"postgresql://{cred}@{p['host']}:{p['port']}/{name}"

    def es_env(self, name: str) -> dict[str, str]:
        p = self.params
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": name,
            "POSTGRES_HOST": str(p["host"]),
            "POSTGRES_PORT": str(p["port"]),
            "POSTGRES_USER": p["user"],
            "POSTGRES_PASSWORD": p["password"] or "",
        }

    def drop(self, name: str) -> None:
        try:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as e:  # noqa: BLE001 — report, keep dropping the others
            print(f"warning: could not drop database {name}: {e}", file=sys.stderr)
        self.created.remove(name)

    def close(self, keep: bool = False) -> None:
        """Drop every database created and not dropped yet (none with `keep`)."""
        if not keep:
            for name in list(self.created):
                self.drop(name)
        self.admin.close()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    import sqlite3

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    rev = _git("rev-parse", "--short=12", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    try:
        from importlib.metadata import version

        es_version = version("eventsourcing")
        psycopg_version = version("psycopg")
    except Exception:  # noqa: BLE001
        es_version = psycopg_version = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform_mod.python_version(),
        "implementation": platform_mod.python_implementation(),
        "os": platform_mod.platform(),
        "sqlite": sqlite3.sqlite_version,
        "eventsourcing": es_version,
        "psycopg": psycopg_version,
        "git_rev": rev + ("+dirty" if dirty else ""),
    }


def save_report(results: Path, name: str, markdown: str, doc: dict[str, Any]) -> None:
    """Writes a run's report as `results/name.md` (for people) and `results/name.json` (for tools)."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text(markdown)
    (results / f"{name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _filesystem(path: str) -> str:
    """The file system holding `path`, as `df` names it (type, device)."""
    try:
        out = subprocess.run(["df", "--output=fstype,source", path], capture_output=True,
                             text=True, timeout=30).stdout.split()
        return f"{out[-2]} on {out[-1]}"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def loadavg() -> str:
    """The load average (1, 5, 15 min) as "a b c": how shared the machine was."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def _rate(r: dict[str, Any] | None) -> float | None:
    if not r or not r.get("seconds"):
        return None
    return r["events"] / r["seconds"]


def _fmt_int(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}".replace(",", " ")


def build_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    raw = _rate(res.get("raw_sqlite3"))
    spec = [
        ("peerledger ingest SQLite (end to end, CLI)", "ingest_sqlite"),
        ("peerledger ingest PostgreSQL (end to end, CLI)", "ingest_pg"),
        ("append-only SQLite (Ingestor, no projector)", "append_sqlite"),
        ("append-only PostgreSQL (Ingestor, no projector)", "append_pg"),
        ("project SQLite (CLI `project` on the append-only db)", "project_sqlite"),
        ("project PostgreSQL (CLI `project` on the append-only db)", "project_pg"),
        ("verify SQLite (CLI, full replay + checks)", "verify_sqlite"),
        ("verify PostgreSQL (CLI, full replay + checks)", "verify_pg"),
        ("replay (fold only) SQLite", "replay_sqlite"),
        ("replay (fold only) PostgreSQL", "replay_pg"),
        ("plain eventsourcing SQLite (save per event)", "es_sqlite"),
        ("plain eventsourcing PostgreSQL (save per event)", "es_pg"),
        ("raw sqlite3 executemany (WAL, 1000/commit)", "raw_sqlite3"),
        ("floor: parse + validate + canonical + leaf hash (no decide, no store)", "parse_floor"),
        ("floor: Store.append of prebuilt rows, SQLite (no parse, no decide)", "store_sqlite"),
        ("floor: Store.append of prebuilt rows, PostgreSQL (no parse, no decide)", "store_pg"),
    ]
    targets: dict[str, list[tuple[str, Any]]] = {
        "ingest_sqlite": [
            (f"≥ {_fmt_int(TARGET_INGEST_SQLITE)} ev/s", lambda r, q: r >= TARGET_INGEST_SQLITE),
            ("≥ 1/4 of raw", lambda r, q: q is not None and q >= TARGET_INGEST_RAW_RATIO),
        ],
        "ingest_pg": [(f"≥ {_fmt_int(TARGET_INGEST_PG)} ev/s", lambda r, q: r >= TARGET_INGEST_PG)],
        "replay_sqlite": [(f"≥ {_fmt_int(TARGET_REPLAY)} ev/s", lambda r, q: r >= TARGET_REPLAY)],
    }
    rows = []
    for label, key in spec:
        r = res.get(key)
        rate = _rate(r)
        ratio = rate / raw if rate is not None and raw else None
        checks = []
        for text, ok in targets.get(key, []):
            met = None if rate is None else bool(ok(rate, ratio))
            checks.append({"target": text, "met": met})
        rows.append({
            "key": key,
            "label": label,
            "events": r["events"] if r else None,
            "seconds": r["seconds"] if r else None,
            "events_per_s": rate,
            "ratio_to_raw": ratio,
            "targets": checks,
            "skipped": r is None,
        })
    return rows


def _ceilings(res: dict[str, Any]) -> list[str]:
    """What the floor rows leave for everything else: an ingest that spent
    nothing on deciding, folding and projecting would still need
    1/parse + 1/store seconds per event in its one writer process."""
    parse = _rate(res.get("parse_floor"))
    notes = []
    for key, name in (("store_sqlite", "SQLite"), ("store_pg", "PostgreSQL")):
        store = _rate(res.get(key))
        if parse and store:
            ceiling = 1 / (1 / parse + 1 / store)
            notes.append(
                f"ceiling on {name}: parse {1e6 / parse:.1f} µs + store {1e6 / store:.1f} µs per event "
                f"= {1e6 / ceiling:.1f} µs, so at most {_fmt_int(ceiling)} events/s for a writer that "
                f"spent nothing on deciding, folding and projecting.")
    return notes


def markdown_table(rows: list[dict[str, Any]]) -> str:
    out = ["| measurement | events | seconds | events/s | ÷ raw | target | met |",
           "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        if row["skipped"]:
            out.append(f"| {row['label']} | — | — | — | — | "
                       + " ; ".join(t["target"] for t in row["targets"]) + " | skipped |")
            continue
        targets = " ; ".join(t["target"] for t in row["targets"])
        met = " ; ".join("met" if t["met"] else "**not met**" for t in row["targets"])
        out.append(
            f"| {row['label']} | {_fmt_int(row['events'])} | {row['seconds']:.2f} | "
            f"{_fmt_int(row['events_per_s'])} | {row['ratio_to_raw']:.3f} | {targets} | {met} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events in the stream (default 200 000)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {QUICK_EVENTS} events; results go to bench/results/ingest-quick.*")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--es-events", type=int, default=DEFAULT_ES_EVENTS,
                    help="prefix of the stream for the plain eventsourcing reference (0 = whole stream)")
    ap.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL measurements")
    ap.add_argument("--pg", default=DEFAULT_PG,
                    help="a PostgreSQL URL whose server gets the fresh benchmark databases")
    ap.add_argument("--profile", action="store_true",
                    help=f"also cProfile the in-process append path (SQLite, first {PROFILE_EVENTS} events)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"), help="where to write results")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (stream, SQLite files)")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        if args.worker in ("append", "replay"):
            # The ledger's own processes run with these GC thresholds
            # (ledger/ops/runtime.py); in-process measurements must too.
            from ledger.ops.runtime import tune_gc

            tune_gc()
        result = WORKERS[args.worker](json.loads(args.spec))
        sys.stdout.write(json.dumps(result) + "\n")
        return 0

    n = QUICK_EVENTS if args.quick else args.events
    if n < 1:
        ap.error("--events must be positive")
    es_n = n if args.es_events <= 0 else min(args.es_events, n)
    name = "ingest-quick" if args.quick else "ingest"
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info()
    load_start = loadavg()
    print(f"# peerledger ingest benchmark: {_fmt_int(n)} events, seed {args.seed}", flush=True)
    print(f"machine: {machine['nproc']} cores, {machine['cpu']}, Python {machine['python']}, "
          f"git {machine['git_rev']}, load {load_start}", flush=True)

    tmp = tempfile.mkdtemp(prefix="peerledger-bench-")
    machine["tmp_dir_fs"] = _filesystem(tmp)
    res: dict[str, Any] = {}
    pg: PgServer | None = None
    try:
        from ledger.demo.generate import generate, write_jsonl

        stream = os.path.join(tmp, "stream.jsonl")
        t0 = time.perf_counter()
        written = write_jsonl(stream, generate(args.seed, n, PLATFORM))
        gen_s = time.perf_counter() - t0
        assert written == n
        size = os.path.getsize(stream)
        print(f"generated {written} events, {size / 1e6:.1f} MB, in {gen_s:.1f} s", flush=True)

        if not args.no_postgres:
            pg = PgServer(args.pg)
            machine["postgresql"] = pg.version

        def step(key: str, what: str, fn: Any, *a: Any) -> None:
            print(f"  {what} ...", end=" ", flush=True)
            r = fn(*a)
            res[key] = r
            print(f"{r['events']} events in {r['seconds']:.2f} s = {_fmt_int(_rate(r))} ev/s", flush=True)

        startup_s = cli_startup(tmp)
        print(f"CLI start-up (python -c 'import ledger.cli'): {startup_s:.2f} s", flush=True)
        sqlite_url = f"sqlite:///{tmp}/ingest.db"
        step("raw_sqlite3", "raw sqlite3 executemany", run_worker, "raw", {"file": stream, "path": f"{tmp}/raw.db"}, tmp)
        step("ingest_sqlite", "ingest SQLite (CLI)", cli_ingest, stream, sqlite_url, n, tmp)
        append_sqlite = f"sqlite:///{tmp}/append.db"
        step("append_sqlite", "append-only SQLite", run_worker, "append", {"file": stream, "db": append_sqlite}, tmp)
        step("parse_floor", "floor: parse only", run_worker, "parse", {"file": stream}, tmp)
        step("store_sqlite", "floor: Store.append only, SQLite", run_worker, "store",
             {"source": f"{tmp}/append.db", "db": f"sqlite:///{tmp}/store.db"}, tmp)
        step("project_sqlite", "project SQLite (CLI)", cli_project, append_sqlite, n, tmp)
        step("verify_sqlite", "verify SQLite (CLI)", cli_verify, sqlite_url, n, tmp)
        step("replay_sqlite", "replay SQLite (fold only)", run_worker, "replay", {"db": sqlite_url}, tmp)
        step("es_sqlite", f"plain eventsourcing SQLite ({es_n} events)", run_worker, "es",
             {"file": stream, "limit": es_n,
              "env": {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": f"{tmp}/es.db"}}, tmp)
        if pg is not None:
            pg_url = pg.url(pg.create())
            step("ingest_pg", "ingest PostgreSQL (CLI)", cli_ingest, stream, pg_url, n, tmp)
            append_pg = pg.url(pg.create())
            step("append_pg", "append-only PostgreSQL", run_worker, "append", {"file": stream, "db": append_pg}, tmp)
            step("project_pg", "project PostgreSQL (CLI)", cli_project, append_pg, n, tmp)
            step("store_pg", "floor: Store.append only, PostgreSQL", run_worker, "store",
                 {"source": f"{tmp}/append.db", "db": pg.url(pg.create())}, tmp)
            step("verify_pg", "verify PostgreSQL (CLI)", cli_verify, pg_url, n, tmp)
            step("replay_pg", "replay PostgreSQL (fold only)", run_worker, "replay", {"db": pg_url}, tmp)
            step("es_pg", f"plain eventsourcing PostgreSQL ({es_n} events)", run_worker, "es",
                 {"file": stream, "limit": es_n, "env": pg.es_env(pg.create())}, tmp)

        profile = None
        if args.profile:
            pn = min(PROFILE_EVENTS, n)
            print(f"  cProfile of the append path (SQLite, {pn} events) ...", flush=True)
            profile = run_worker("append", {"file": stream, "db": f"sqlite:///{tmp}/profile.db",
                                            "limit": pn, "profile": True, "top": 25}, tmp)
    finally:
        if pg is not None:
            pg.close()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    load_end = loadavg()
    try:
        from ledger.ingest import files as ledger_cli

        parallel_min = getattr(ledger_cli, "PARALLEL_PROJECTION_MIN_BYTES", 4 * 2**20)
    except Exception:  # noqa: BLE001 — the note only
        parallel_min = 4 * 2**20
    rows = build_rows(res)
    table = markdown_table(rows)
    finished = datetime.datetime.now(datetime.timezone.utc)
    command = " ".join(["python bench/ingest_bench.py", *(sys.argv[1:] if argv is None else argv)])
    notes = [
        f"stream: `generate({args.seed}, {n}, \"{PLATFORM}\")`, {size / 1e6:.1f} MB of JSON Lines, "
        f"all events acceptable; generated in {gen_s:.1f} s (not part of any row).",
        "ingest and verify rows: wall clock of the CLI subprocess (includes interpreter start-up, imports "
        "and schema creation; ingest also runs the projector in a second process and returns when the "
        "read models are at the head).",
        "append-only and replay rows: timed in a fresh interpreter, store already open; append-only reads "
        "and parses the file inside the timed section.",
        f"plain eventsourcing rows: one `Stream` aggregate, `Recorded(line)` per event, `app.save()` after "
        f"each (one transaction per event), on the first {es_n} events"
        + (" (a prefix: the whole stream would take too long at one transaction per event)." if es_n < n else "."),
        "raw sqlite3 row: ids extracted before the timed section; WAL, synchronous=FULL (SQLite's default, "
        "as the ledger's store), 1000 rows per transaction.",
        "project rows: `python -m ledger.cli project --db URL` (one catch-up pass) on the database the "
        "append-only row filled: the read models alone, wall clock of the subprocess.",
        f"CLI start-up (interpreter + `import ledger.cli`, best of 3): {startup_s:.2f} s, included in every CLI row.",
        f"the CLI projects in a second process while appending when the input is at least "
        f"{parallel_min / 2**20:.0f} MiB, else after appending, in process: this stream ({size / 2**20:.1f} MiB) "
        f"was projected {'in parallel' if size >= parallel_min else 'after appending'}.",
        "÷ raw: events/s of the row divided by events/s of raw sqlite3 executemany.",
        "floor rows: the two stages every accepted event must pass whatever the decide and fold cost, "
        "each alone in a fresh interpreter: the shape stage (`ledger.contract.schema.parse_event` and the leaf "
        "hash) and the store's write (`Store.append` of the append-only run's own rows: events, id "
        "records, Merkle nodes, read back from the append-only SQLite file; one transaction per 1000 events).",
        *_ceilings(res),
        f"load average (1, 5, 15 min) at start {load_start}, at end {load_end}; the machine is shared: "
        "expect run-to-run noise.",
    ]
    md = [
        "# peerledger ingest/replay benchmark",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M:%S')} UTC (took {(finished - started).total_seconds():.0f} s)",
        f"- command: `{command}`",
        f"- machine: nproc {machine['nproc']}, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        f"- Python {machine['python']} ({machine['implementation']}), SQLite {machine['sqlite']}, "
        f"PostgreSQL {machine.get('postgresql', '(skipped)')}, eventsourcing {machine['eventsourcing']}, "
        f"psycopg {machine['psycopg']}",
        f"- git rev: {machine['git_rev']}",
        f"- SQLite files and the stream in a temporary directory on {machine['tmp_dir_fs']}",
        "",
        table,
        "",
        "Targets: ingest SQLite ≥ 50 000 ev/s and ≥ 1/4 of raw sqlite3; ingest PostgreSQL ≥ 20 000 ev/s; "
        "replay (fold only) ≥ 100 000 ev/s.",
        "",
        *(f"- {note}" for note in notes),
    ]
    if profile is not None:
        md += ["", f"## cProfile: in-process append path, SQLite, {profile['events']} events "
                   f"({profile['seconds']:.2f} s under the profiler), top 10 by cumulative time", "",
               "```", _trim_pstats(profile["cumulative"], 10), "```"]
    text = "\n".join(md) + "\n"

    print()
    print(table)
    print()
    for row in rows:
        for t in row["targets"]:
            state = "skipped" if t["met"] is None else ("met" if t["met"] else "NOT MET")
            print(f"target {row['label']}: {t['target']}: {state}")
    if profile is not None:
        print()
        print(_trim_pstats(profile["cumulative"], 10))

    results = Path(args.results)
    payload = {
        "date": started.isoformat(timespec="seconds"),
        "seconds_total": round((finished - started).total_seconds(), 1),
        "command": command,
        "machine": machine,
        "load_average": {"start": load_start, "end": load_end},
        "stream": {"seed": args.seed, "events": n, "platform": PLATFORM, "bytes": size,
                   "generate_seconds": round(gen_s, 3)},
        "es_events": es_n,
        "rows": rows,
        "targets": {
            "ingest_sqlite_events_per_s": TARGET_INGEST_SQLITE,
            "ingest_sqlite_ratio_to_raw": TARGET_INGEST_RAW_RATIO,
            "ingest_pg_events_per_s": TARGET_INGEST_PG,
            "replay_events_per_s": TARGET_REPLAY,
        },
        "notes": notes,
    }
    if profile is not None:
        payload["profile"] = {"events": profile["events"], "seconds": profile["seconds"],
                              "cumulative": profile["cumulative"], "tottime": profile["tottime"]}
    save_report(results, name, text, payload)
    print(f"\nwrote {results / (name + '.md')} and {results / (name + '.json')}")
    return 0


def _trim_pstats(text: str, top: int) -> str:
    """The pstats listing's header and its first `top` functions, leaving out
    the benchmark's own wrapper (drops the preamble)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("ncalls"):
            body = [entry.rstrip() for entry in lines[i + 1:]
                    if entry.strip() and "ingest_bench.py" not in entry]
            return "\n".join([line.rstrip(), *body[:top]])
    return text.strip()


if __name__ == "__main__":
    sys.exit(main())
