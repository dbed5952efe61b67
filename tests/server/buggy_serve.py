"""``wattkeeper serve`` with a bug injected into one of the park's background tasks.

Run as ``python -m tests.server.buggy_serve serve --config PARK.toml``: half a second after
start the collector-hygiene task raises, as a bug in any task of the park would, and the error
travels up through trio's nested nurseries as an exception group.
"""

from __future__ import annotations

import sys

import trio

import server.app
from server.cli import main


async def buggy_hygiene(
    *_args: object, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    await trio.sleep(0.5)
    raise RuntimeError("injected bug")


if __name__ == "__main__":
    server.app.run_collector_hygiene = buggy_hygiene  # type: ignore[assignment]  # the bug
    sys.exit(main(sys.argv[1:]))
