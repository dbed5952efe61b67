"""SIGKILL at random moments during top-ups and readings loses and duplicates nothing.

After every kill the park restarts from the data directory. At the end one more reading per
meter charges everything consumed, and then for every meter:

    balance == opening + (its top-ups in the journal) - charge(final register - first register)

to the minor unit, and every top-up that was acknowledged is in the journal exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from policies.money import charge, parse_price
from tests.server import crash_worker

ROOT = Path(__file__).resolve().parents[2]
KILLS = 4


def _start(mode: str, data_dir: Path, generation: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.server.crash_worker", mode, str(data_dir), str(generation)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_and_kill(data_dir: Path, generation: int, rng: random.Random) -> list[str]:
    worker = _start("run", data_dir, generation)
    assert worker.stdout is not None
    acks: list[str] = []
    # Wait for the first acknowledgement so the kill lands in the middle of real traffic.
    first = worker.stdout.readline()
    assert first.startswith("ACK"), (first, worker.stderr.read() if worker.stderr else "")
    acks.append(first)
    time.sleep(rng.uniform(0.05, 0.8))
    os.kill(worker.pid, signal.SIGKILL)
    rest, _ = worker.communicate(timeout=30)
    acks.extend(line for line in rest.splitlines() if line.startswith("ACK"))
    assert worker.returncode == -signal.SIGKILL
    return acks


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_topup_and_charges_exactly(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    data_dir = tmp_path / "park"
    acked: list[tuple[str, str, int]] = []
    for generation in range(KILLS):
        for line in _run_and_kill(data_dir, generation, rng):
            _, reference, meter, amount, _balance = line.split()
            acked.append((reference, meter, int(amount)))

    verifier = _start("verify", data_dir, KILLS)
    out, err = verifier.communicate(timeout=60)
    assert verifier.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])

    journal_refs = Counter(reference for reference, _meter, _amount in report["topups"])
    assert all(count == 1 for count in journal_refs.values()), "a reference journaled twice"
    for reference, _meter, _amount in acked:
        assert journal_refs[reference] == 1, f"acknowledged top-up {reference} lost"
    assert len(acked) > 20, "the kills landed too early to prove anything"

    price = parse_price("1.00")
    consumed_wh = crash_worker.register_at(crash_worker.FINAL_STEP) - crash_worker.register_at(0)
    expected_charge, _residue = charge(consumed_wh, price, 0)
    for meter, balance in report["balances"].items():
        topped_up = sum(amount for _ref, m, amount in report["topups"] if m == meter)
        assert balance == 100_00 + topped_up - expected_charge, meter
