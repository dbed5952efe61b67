"""A park process for the notice crash test: ``python -m tests.notify.crash_park DATA_DIR
SMTP_PORT WEBHOOK_URL``. It raises a top-up receipt and a low-balance reminder, prints
``WRITTEN`` once both are in the outbox, and waits to be SIGKILLed."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from policies.records import Reading
from server.app import open_park
from tests.notify.parks import T0, notify_park


async def main(data_dir: Path, smtp_port: int, webhook_url: str) -> None:
    park_config = notify_park(data_dir, smtp_port, webhook_url, slow_retries=True)
    async with open_park(park_config, with_field=False, clock_ms=lambda: T0) as park:
        await park.ledger.top_up("M-0", 500, "pay-crash", T0)
        park.registry.deliver_reading_nowait(0, Reading(T0, 1_000_000, 3000.0))
        park.registry.deliver_reading_nowait(0, Reading(T0 + 3_600_000, 1_060_000, 3000.0))
        assert park.notifier is not None
        with trio.fail_after(20):
            while park.notifier.statistics.written < 2:
                await trio.sleep(0.01)
        print("WRITTEN", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
