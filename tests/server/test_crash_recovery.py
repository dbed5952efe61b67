"""SIGKILL at random moments during top-ups and readings loses and duplicates nothing.

After every kill the park restarts from the data directory. At the end one more reading per
meter charges everything consumed, and then for every meter:

    balance == opening + (its top-ups in the journal) - charge(final register - first register)

to the minor unit, and every top-up that was acknowledged is in the journal exactly once.

Each restart first sends again the last acknowledged top-up of the killed generation and the
one after it (perhaps in flight at the kill, perhaps never sent), as a cashier retrying a
timed-out request would. The acknowledged one must come back as a duplicate; the other may be
new or a duplicate; either way neither moves money twice. Right after a kill these references
are usually in the journal's unindexed tail (``persistence.index``), which is the case this
covers.
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


def _start(
    mode: str, data_dir: Path, generation: int, retries: list[str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.server.crash_worker", mode, str(data_dir), str(generation),
         *(retries or [])],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_and_kill(
    data_dir: Path, generation: int, rng: random.Random, retries: list[str]
) -> list[str]:
    """The worker's ``ACK`` and ``RETRY`` lines until it was killed."""
    worker = _start("run", data_dir, generation, retries)
    assert worker.stdout is not None
    lines: list[str] = []
    # Wait for the first acknowledgement so the kill lands in the middle of real traffic.
    while not lines or not lines[-1].startswith("ACK"):
        line = worker.stdout.readline()
        assert line.startswith(("ACK", "RETRY")), (
            line, worker.stderr.read() if worker.stderr else "")
        lines.append(line)
    time.sleep(rng.uniform(0.05, 0.8))
    os.kill(worker.pid, signal.SIGKILL)
    rest, _ = worker.communicate(timeout=30)
    lines.extend(line for line in rest.splitlines() if line.startswith(("ACK", "RETRY")))
    assert worker.returncode == -signal.SIGKILL
    return lines


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_topup_and_charges_exactly(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    data_dir = tmp_path / "park"
    acked: list[tuple[str, str, int]] = []
    retries: list[str] = []
    for generation in range(KILLS):
        lines = _run_and_kill(data_dir, generation, rng, retries)
        answers = [line.split() for line in lines if line.startswith("RETRY")]
        assert [answer[1] for answer in answers] == [spec.split(":")[0] for spec in retries]
        if retries:
            assert answers[0][2] == "True", f"acknowledged {answers[0][1]} was not a duplicate"
        for line in lines:
            if line.startswith("ACK"):
                _, reference, meter, amount, _balance = line.split()
                acked.append((reference, meter, int(amount)))
        last = int(acked[-1][0].split("-s")[1])
        retries = [crash_worker.retry_spec(generation, last),
                   crash_worker.retry_spec(generation, last + 1)]

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
