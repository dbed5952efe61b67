"""A park process for the crash test: top-ups and readings until it is SIGKILLed.

Run as ``python -m tests.server.crash_worker MODE DATA_DIR GENERATION [RETRY...]``:

* ``run``: first each ``RETRY`` (``reference:meter:amount``, a top-up of an earlier generation
  sent again, as a cashier whose request timed out would; printed as ``RETRY <reference>
  <duplicate> <balance>``), then top-ups (printed as ``ACK <reference> <meter> <amount>
  <balance>`` once acknowledged) and readings interleaved, forever; the parent kills it at a
  random moment.
* ``verify``: one last reading per meter (register beyond anything sent before), then print the
  balances as one JSON line and exit.

Registers and timestamps are a pure function of (generation, step), so every generation's
readings continue where the previous one's could have left off, and the final reading is known.
They are also plausible for the meter: a step is 1 s and 5 Wh (18 kW on a meter rated near
100 kW), and a generation starts ``STEPS_PER_GENERATION`` steps (and as many seconds) after the
previous one, so the register jump between generations is matched by the time between them.
Timestamps are in the past (2020-2023), never ahead of the wall clock.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from persistence.recovery import entries_after
from policies.records import Reading
from server.app import open_park
from server.config import ParkConfig
from tests.server.parks import small_park

METERS = 8
WH_PER_STEP = 5
"""Per 1 s step: 18 kW, a plausible load for an sdm630."""
START_MS = 1_600_000_000_000
STEPS_PER_GENERATION = 1_000_000
FINAL_STEP = 99 * STEPS_PER_GENERATION


def register_at(step: int) -> int:
    return 1_000 + step * WH_PER_STEP


def amount_at(step: int) -> int:
    return 100 + step % 900


def retry_spec(generation: int, step: int) -> str:
    """A top-up of ``generation`` as a ``RETRY`` argument."""
    return f"g{generation}-s{step}:M-{step % METERS}:{amount_at(step)}"


def reading_at(step: int) -> Reading:
    return Reading(START_MS + step * 1_000, register_at(step), 1_000.0)


def load_config(data_dir: Path) -> ParkConfig:
    return small_park(data_dir, METERS)


async def run(data_dir: Path, generation: int, retries: list[str]) -> None:
    async with open_park(load_config(data_dir), snapshot_interval_s=0.05,
                         with_field=False) as park:
        for spec in retries:
            reference, meter, amount = spec.split(":")
            ack = await park.ledger.top_up(meter, int(amount), reference, START_MS)
            print(f"RETRY {reference} {ack.duplicate} {ack.balance}", flush=True)
        if generation == 0:
            # The first reading is each meter's charging baseline; it is durable once
            # snapshotted, and only from then on is "nothing lost" a promise (docs/operations.md).
            for key in range(METERS):
                park.registry.deliver_reading_nowait(key, reading_at(0))
            await park.snapshot_now()
        first = generation * STEPS_PER_GENERATION
        for step in range(first, first + STEPS_PER_GENERATION):
            for key in range(METERS):
                park.registry.deliver_reading_nowait(key, reading_at(step))
            key = step % METERS
            reference = f"g{generation}-s{step}"
            ack = await park.ledger.top_up(f"M-{key}", amount_at(step), reference, START_MS)
            print(f"ACK {reference} M-{key} {amount_at(step)} {ack.balance}", flush=True)


async def verify(data_dir: Path) -> None:
    async with open_park(load_config(data_dir), with_field=False) as park:
        for key in range(METERS):
            park.registry.deliver_reading_nowait(key, reading_at(FINAL_STEP))
        while park.dispatcher.queue_depth:
            await trio.sleep(0.01)
        balances = {actor.meter_id: actor.state.balance for actor in park.registry}
        topups = [
            (entry.reference, entry.meter_id, entry.amount)
            for _seq, entry in entries_after(park.store, 0)
            if entry.kind == "topup"
        ]
    print(json.dumps({"balances": balances, "topups": topups}), flush=True)


def main() -> None:
    mode, data_dir, generation = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if mode == "run":
        trio.run(run, data_dir, generation, sys.argv[4:])
    else:
        trio.run(verify, data_dir)


if __name__ == "__main__":
    main()
