"""The HTTP server: hypercorn's trio worker serving :func:`protocols.http.app.build_app`.

``open_http`` binds the port and yields the server's URL (port 0 picks a free one: tests);
leaving it stops hypercorn gracefully (no new connections, requests in progress get
``GRACEFUL_TIMEOUT_S`` to finish). ``run_http`` is the same as a task for the park's nursery.
Hypercorn's own log lines go to a child of this module's logger (warnings and errors only), so
they end up in the park's log file; access logging is off (``/metrics`` is scraped every few
seconds, and the audit log already records every command).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, cast

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import Framework

from protocols.http.app import build_app
from protocols.http.backend import HttpBackend

log = logging.getLogger(__name__)
# Hypercorn's own lines: its warnings and errors (with tracebacks) are worth the log file; its
# "Running on ..." would repeat ours on the demo's terminal.
hypercorn_log = logging.getLogger(__name__ + ".hypercorn")
hypercorn_log.setLevel(logging.WARNING)

GRACEFUL_TIMEOUT_S: Final = 2.0


@attrs.frozen
class HttpServer:
    url: str
    """``http://host:port`` as bound (the real port when 0 was asked for)."""


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = hypercorn_log
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.include_server_header = False
    return config


@asynccontextmanager
async def open_http(backend: HttpBackend, host: str, port: int) -> AsyncIterator[HttpServer]:
    stop = trio.Event()
    # Starlette types its ASGI callable loosely (MutableMapping scopes); hypercorn strictly.
    app = cast(Framework, build_app(backend))
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: serve(app, hypercorn_config(host, port),
                                      shutdown_trigger=stop.wait, task_status=task_status))
        server = HttpServer(binds[0])
        log.info("console and HTTP API on %s", server.url)
        try:
            yield server
        finally:
            stop.set()


async def run_http(backend: HttpBackend, host: str, port: int, *,
                   task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``task_status.started`` gets the :class:`HttpServer`."""
    async with open_http(backend, host, port) as server:
        task_status.started(server)
        await trio.sleep_forever()
