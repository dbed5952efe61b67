"""A small park with its OPC UA server (in its own process, on a free port), and a way for
trio tests to drive asyncua clients: an asyncio loop in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
from asyncua import Client, ua

from server.app import Park
from server.config import ParkConfig
from server.services import Services
from tests.ws.parks import hub_park, open_hub

T = TypeVar("T")
NONE_KEYS = 'endpoint = "opc.tcp://127.0.0.1:0/wattkeeper/"\nsecurity = "none"'
SECURE_KEYS = 'endpoint = "opc.tcp://127.0.0.1:0/wattkeeper/"'


def opcua_park(data_dir: Path, keys: str = NONE_KEYS, **kwargs: Any) -> ParkConfig:
    return hub_park(data_dir, opcua=keys, **kwargs)


@asynccontextmanager
async def open_opcua(config: ParkConfig) -> AsyncIterator[tuple[Park, Services]]:
    async with open_hub(config) as (park, services):
        assert services.opcua is not None and services.opcua_url
        yield park, services


class AsyncioThread:
    """Runs coroutines on an asyncio loop in another thread; trio awaits their results."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    async def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@contextmanager
def asyncio_thread() -> Iterator[AsyncioThread]:
    thread = AsyncioThread()
    try:
        yield thread
    finally:
        thread.close()


async def connect(url: str, user: str | None = "op", password: str = "op-secret",
                  security: str | None = None) -> Client:
    """(On the asyncio loop.) A connected asyncua client."""
    client = Client(url, timeout=10)
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    if security is not None:
        await client.set_security_string(security)
    await client.connect()
    return client


async def meter_node(client: Client, meter_id: str, variable: str | None = None) -> Any:
    """(On the asyncio loop.) ``Objects / Park / Meters / <meter id> [/ variable]`` by browse
    names, as the contract writes it."""
    ns = await client.get_namespace_index("urn:wattkeeper")
    path = [f"{ns}:Park", f"{ns}:Meters", f"{ns}:{meter_id}"]
    if variable is not None:
        path.append(f"{ns}:{variable}")
    return await client.nodes.objects.get_child(path)


async def call(client: Client, meter_id: str, method: str, *args: Any) -> Any:
    """(On the asyncio loop.) The raw Call result (status, outputs, per-argument results)."""
    meter = await meter_node(client, meter_id)
    ns = await client.get_namespace_index("urn:wattkeeper")
    method_node = await meter.get_child(f"{ns}:{method}")
    request = ua.CallMethodRequest(ObjectId=meter.nodeid, MethodId=method_node.nodeid,
                                   InputArguments=[a if isinstance(a, ua.Variant)
                                                   else ua.Variant(a) for a in args])
    [result] = await client.uaclient.call([request])
    return result
