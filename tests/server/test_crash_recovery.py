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

The other tests kill the journal writer *alone*, inside a running park: the park goes on
(readings charged), money commands are refused with ``StorageUnavailable`` until the writer is
back, and afterwards every acknowledged top-up is in the journal exactly once and the balances
add up; a top-up the dying writer committed without telling anyone reaches its meter once,
and its retry is answered as a duplicate with the balance right after it.
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
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from persistence.codec import encode_entry
from persistence.journal import JournalEntry, StorageUnavailable
from persistence.recovery import entries_after
from persistence.writer import RecordRequest, Writer
from policies.money import charge, parse_price
from server.app import open_park
from tests.server import crash_worker
from tests.server.crash_worker import METERS, START_MS, reading_at, register_at

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


# --- the journal writer killed alone ----------------------------------------------------------

WRITER_KILLS = 3


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.002)


@pytest.mark.slow
async def test_sigkill_of_the_journal_writer_refuses_money_meanwhile_and_loses_nothing(
    tmp_path: Path,
) -> None:
    acked: list[tuple[str, str, int, bool]] = []  # reference, meter, amount, duplicate
    unknown: set[str] = set()  # refused with "outcome unknown": in flight at a kill
    refusals = 0
    events: list[tuple[bool, str]] = []
    step = 0
    stop = trio.Event()
    config = crash_worker.load_config(tmp_path / "park")
    async with open_park(config, snapshot_interval_s=0.05, with_field=False) as park:
        journal, registry, ledger = park.journal, park.registry, park.ledger
        journal.set_on_availability(lambda up, detail: events.append((up, detail)))
        for key in range(METERS):
            registry.deliver_reading_nowait(key, reading_at(0))
        await park.snapshot_now()

        async def readings() -> None:
            nonlocal step
            while not stop.is_set():
                step += 1
                for key in range(METERS):
                    registry.deliver_reading_nowait(key, reading_at(step))
                await trio.sleep(0.002)

        async def cashier(number: int) -> None:
            """Top-ups one after another; a refused one is retried with the same id."""
            nonlocal refusals
            count = 0
            while not stop.is_set():
                reference = f"c{number}-{count}"
                meter, amount = f"M-{(number + count) % METERS}", 100 + count % 900
                while True:
                    try:
                        ack = await ledger.top_up(meter, amount, reference, START_MS)
                        break
                    except StorageUnavailable as error:
                        refusals += 1
                        if "outcome is unknown" in str(error):
                            unknown.add(reference)
                        await trio.sleep(0.005)
                acked.append((reference, meter, amount, ack.duplicate))
                count += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(readings)
            for number in range(4):
                nursery.start_soon(cashier, number)
            for kill in range(WRITER_KILLS):
                await trio.sleep(0.3)
                killed = journal.writer_pid
                acked_before = len(acked)
                os.kill(killed, signal.SIGKILL)
                await until(lambda: not journal.available)
                with pytest.raises(StorageUnavailable, match="nothing was done") as refused:
                    await ledger.top_up("M-0", 100, f"down-{kill}", START_MS)
                assert refused.value.code == "unavailable"
                # Readings go on being applied while storage is down.
                target = register_at(step)
                await until(lambda target=target: all(
                    actor.state.register_wh >= target for actor in registry))
                assert not journal.available
                await until(lambda: journal.available)
                assert journal.writer_pid != killed
                written = journal.statistics().snapshots_written
                await until(lambda written=written: (
                    journal.statistics().snapshots_written > written))
                await until(lambda before=acked_before: len(acked) > before + 20)
            stop.set()
        final = step + 1
        for key in range(METERS):
            registry.deliver_reading_nowait(key, reading_at(final))
        await until(lambda: park.dispatcher.queue_depth == 0
                    and all(actor.state.register_wh == register_at(final) for actor in registry))
        balances = {actor.meter_id: actor.state.balance for actor in registry}
        topups = [(entry.reference, entry.meter_id, entry.amount)
                  for _seq, entry in entries_after(park.store, 0) if entry.kind == "topup"]
        assert journal.statistics().writer_restarts == WRITER_KILLS

    assert [up for up, _ in events] == [False, True] * WRITER_KILLS
    assert all("exited with code -9" in detail for up, detail in events if not up)
    assert refusals >= 1 and len(acked) > 100
    journal_refs = Counter(reference for reference, _meter, _amount in topups)
    assert all(count == 1 for count in journal_refs.values()), "a reference journaled twice"
    assert not any(reference.startswith("down-") for reference in journal_refs)
    for reference, _meter, _amount, duplicate in acked:
        assert journal_refs[reference] == 1, f"acknowledged top-up {reference} lost"
        # A duplicate answer only for a retry of one that was in flight at a kill.
        assert not duplicate or reference in unknown, reference
    assert {(r, m, a) for r, m, a, _ in acked} == set(topups)
    price = parse_price("1.00")
    expected_charge, _residue = charge(register_at(final) - register_at(0), price, 0)
    for meter, balance in balances.items():
        topped_up = sum(amount for _ref, m, amount in topups if m == meter)
        assert balance == 100_00 + topped_up - expected_charge, meter


async def test_a_topup_the_dying_writer_committed_reaches_its_meter_once_and_retries_are_duplicates(
    tmp_path: Path,
) -> None:
    """The writer committed a top-up and died before its result reached the server: made
    deterministic by committing it ourselves, with the writer's own transaction code, between
    the kill and the restart (the restart waits at least 0.1 s; this runs without yielding)."""
    config = crash_worker.load_config(tmp_path / "park")
    async with open_park(config, with_field=False) as park:
        journal, ledger = park.journal, park.ledger
        meter = park.registry.get("M-1")
        assert (await ledger.top_up("M-1", 500, "t-1", START_MS)).balance == 100_00 + 500
        os.kill(journal.writer_pid, signal.SIGSTOP)  # t-lost reaches its pipe, no commit
        outcome: list[BaseException] = []

        async def lost() -> None:
            try:
                await ledger.top_up("M-1", 700, "t-lost", START_MS)
            except StorageUnavailable as error:
                outcome.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lost)
            await until(lambda: journal.statistics().in_flight == 1)
            os.kill(journal.writer_pid, signal.SIGKILL)
        assert "outcome is unknown" in str(outcome[0])
        assert "retry with the same id" in str(outcome[0])
        await until(lambda: not journal.available)
        behind = Writer(park.store)
        behind.submit_record(RecordRequest(0, "M-1", b"t-lost", encode_entry(
            JournalEntry("topup", "M-1", 700, "t-lost", START_MS))))
        behind.write(behind.take())
        assert meter.state.balance == 100_00 + 500  # not delivered yet
        await until(lambda: journal.available)
        assert meter.state.balance == 100_00 + 500 + 700  # delivered once, before anything new
        for _ in range(2):
            retry = await ledger.top_up("M-1", 700, "t-lost", START_MS)
            assert (retry.duplicate, retry.balance) == (True, 100_00 + 500 + 700)
        assert (await ledger.top_up("M-1", 300, "t-2", START_MS)).balance == 100_00 + 1_500
        assert meter.state.balance == 100_00 + 1_500
    async with open_park(config, with_field=False) as park:  # and after a restart
        assert park.registry.get("M-1").state.balance == 100_00 + 1_500
        again = await park.ledger.top_up("M-1", 700, "t-lost", START_MS)
        assert again.duplicate
        references = [entry.reference for _seq, entry in entries_after(park.store, 0)]
        assert references.count("t-lost") == 1
