"""Memory under 300 MiB for every command (issue 18): a real `peerledger
ingest` process, its peak resident memory as the kernel counts it.

The heaviest single event this ledger knows is a sale at the top of a
3000-deep remix chain in which every output passes 5001 bps upstream: the
sold work's vector holds 3 001 accounts whose shares share a 12 904-digit
denominator, 29 MB once serialised, and the process builds, explains,
serialises and writes it.  With the native engine's allocator keeping freed
pages for a second (mimalloc's default), that process peaked at 317 MiB;
giving them back at once, at 202 MiB (`projections._native`, lib.rs).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from chain_helpers import chain_event, remix_chain_lines

from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered
from ledger.storage.store import Store

MIB = 1024 * 1024
COMMAND_RESIDENT_MAX_BYTES = 300 * MIB  # issue 18: every command
DEPTH = 3000

# Runs the command in a fresh process whose only child is the command, so
# that RUSAGE_CHILDREN's high-water mark is the command's alone.
_PEAK_OF_CHILD = ("import resource, subprocess, sys\n"
                  "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
                  "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def _peak_resident_bytes(argv: list[str]) -> int:
    out = subprocess.run([sys.executable, "-c", _PEAK_OF_CHILD, *argv], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) * 1024  # Linux counts ru_maxrss in KiB


@pytest.mark.slow
def test_a_sale_at_the_top_of_a_3000_deep_chain_stays_under_300_mib(tmp_path):
    lines = remix_chain_lines(DEPTH, 5001)
    url = f"sqlite:///{tmp_path / 'deep.db'}"
    with Store(url) as store:
        ingestor = Ingestor(store)
        for i in range(0, len(lines), 1000):
            assert {o.outcome for o in ingestor.ingest([Offered(x, "deep") for x in lines[i:i + 1000]])} == {"accepted"}
    sale = tmp_path / "sale.jsonl"
    sale.write_bytes(chain_event(len(lines), "value.realized", {"value": "v1", "work": f"w{DEPTH}",
                                                              "amount": 2**63 - 1, "currency": "USD"}) + b"\n")

    peak = _peak_resident_bytes([sys.executable, "-m", "ledger.cli", "ingest", "--db", url, str(sale), "--json"])

    with Store(url) as store:
        (size,) = store.query("SELECT length(vector) FROM peerledger_vectors WHERE platform = 'deep' AND work = ?",
                              (f"w{DEPTH}",))[0]
    assert size > 25 * MIB  # the heavy row was built and written
    assert peak < COMMAND_RESIDENT_MAX_BYTES, f"peak resident {peak / MIB:.0f} MiB"
