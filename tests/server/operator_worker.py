"""A park process that takes operator commands, then waits to be SIGKILLed (no last snapshot).

``python -m tests.server.operator_worker DATA_DIR``: snapshots every meter first (so recovery
must replay the journal past the snapshot), opens M-0's relay for maintenance, raises and
acknowledges a low-balance alarm on M-1, prints ``READY <alarm id>`` and sleeps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from server.app import open_park
from server.auth import Caller
from tests.server.parks import small_park

OPERATOR = Caller("op", "operator", "cli")
T0 = 1_790_000_000_000


async def main(data_dir: Path) -> None:
    async with open_park(small_park(data_dir), with_field=False) as park:
        await park.snapshot_now()
        ops = park.operations
        await ops.set_relay(OPERATOR, "M-0", "open", "maintenance", "cmd-open")
        await park.ledger.adjust("M-1", -60_00, "adj-1", T0, "test: below the first level")
        alarm = park.registry.get("M-1").state.alarms.active[0]
        await ops.ack_alarm(OPERATOR, f"M-1/{alarm.alarm_id}", "cmd-ack")
        print("READY", f"M-1/{alarm.alarm_id}", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]))
