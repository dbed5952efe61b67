"""A park with its HTTP side on a free loopback port, for the HTTP and browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio

from server.app import Park, open_park
from server.config import ListenAddress, ParkConfig
from server.web import run_web
from tests.server.parks import park_toml

USERS_TOML = """
[[users]]
name = "op"
password = "op-secret"
role = "operator"

[[users]]
name = "viewer"
password = "viewer-secret"
role = "viewer"

[[users]]
name = "admin"
password = "admin-secret"
role = "admin"
"""

OPERATOR = ("op", "op-secret")
VIEWER = ("viewer", "viewer-secret")
ADMIN = ("admin", "admin-secret")


def park_with_users(data_dir: Path, meters: int = 3, extra_toml: str = "") -> ParkConfig:
    return ParkConfig.from_toml_text(park_toml(data_dir, meters) + USERS_TOML + extra_toml,
                                     "http-park.toml")


@attrs.frozen
class WebPark:
    park: Park
    url: str
    client: httpx.AsyncClient


@asynccontextmanager
async def open_web_park(data_dir: Path, meters: int = 3,
                        extra_toml: str = "") -> AsyncIterator[WebPark]:
    config = park_with_users(data_dir, meters, extra_toml)
    async with open_park(config, with_field=False) as park, trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: run_web(
            park, listen=ListenAddress("127.0.0.1", 0), task_status=task_status))
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield WebPark(park, server.url, client)
        nursery.cancel_scope.cancel()
