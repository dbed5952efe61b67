"""One OPC UA server for one park: asyncua set up with the park's model, methods, alarm
conditions, history and security (``protocols.opcua.*``), following the park's views.

:func:`open_opcua_server` is an async context manager (asyncio: asyncua's loop); while it is
open the server listens and ``apply`` takes each stream tick. It runs in the OPC UA process
(``server.opcua_worker``), never on the control loop's thread.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

import attrs
from asyncua import Server, ua

from protocols.opcua.alarms import AlarmConditions
from protocols.opcua.callers import install_caller_sessions
from protocols.opcua.history import HistorySource, IntervalHistory
from protocols.opcua.methods import Commands, MeterMethods
from protocols.opcua.model import ParkModel
from protocols.opcua.security import (
    SIGN_ENCRYPT_POLICIES,
    ParkUsers,
    TrustList,
    ensure_server_certificate,
    refuse_unsecured_sessions,
    trusted_dir,
)
from protocols.stream.views import ParkState, StreamTick

log = logging.getLogger(__name__)

SERVER_NAME: Final = "wattkeeper"


def endpoint_with_port(endpoint: str, port: int) -> str:
    parts = urlsplit(endpoint)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit(parts._replace(netloc=f"{host}:{port}"))


@attrs.frozen
class OpcUaSettings:
    endpoint: str
    security: Literal["none", "sign-encrypt"]
    data_dir: str
    decimals: int
    currency: str
    interval_ms: int
    certificate: str | None = None  # configured files; None: generated in the data directory
    private_key: str | None = None


@attrs.frozen
class OpcUaStatistics:
    sessions: int
    build_s: float
    updates: int  # meter variable values that changed
    notified: int  # ... that a client monitors
    events: int  # alarm condition events sent


class OpcUaServer:
    def __init__(self, server: Server, model: ParkModel, alarms: AlarmConditions,
                 url: str, build_s: float) -> None:
        self._server = server
        self.model = model
        self.alarms = alarms
        self.url = url
        self.port = urlsplit(url).port or 4840
        self.build_s = build_s

    async def apply(self, tick: StreamTick) -> None:
        await self.model.apply(tick)
        for alarm in tick.alarms:
            await self.alarms.apply(alarm)

    def statistics(self) -> OpcUaStatistics:
        sessions = len(getattr(self._server.iserver, "_external_sessions", {}) or {})
        return OpcUaStatistics(sessions, self.build_s, self.model.updates, self.model.notified,
                               self.alarms.sent)


@asynccontextmanager
async def open_opcua_server(settings: OpcUaSettings, state: ParkState, commands: Commands,
                            check_password: Callable[[str, str], str | None],
                            history: HistorySource | None) -> AsyncIterator[OpcUaServer]:
    """Build the address space from ``state`` and listen on ``settings.endpoint``. A port
    that is taken raises ``OSError``."""
    server = Server(user_manager=ParkUsers(check_password))
    server.iserver.bind_condition_methods = True  # asyncua's ConditionRefresh
    storage = IntervalHistory(history, interval_ms=settings.interval_ms,
                              scale=10 ** settings.decimals)
    server.iserver.history_manager.set_storage(storage)
    await server.init()
    server.set_server_name(SERVER_NAME)
    server.set_endpoint(settings.endpoint)
    await server.set_application_uri("urn:wattkeeper:server")
    server.set_identity_tokens([ua.UserNameIdentityToken])
    install_caller_sessions(server)
    data_dir = Path(settings.data_dir)
    if settings.security == "sign-encrypt":
        if settings.certificate and settings.private_key:
            certificate, key = Path(settings.certificate), Path(settings.private_key)
        else:
            certificate, key = await ensure_server_certificate(
                data_dir, urlsplit(settings.endpoint).hostname or "")
        await server.load_certificate(str(certificate))
        await server.load_private_key(str(key))
        server.set_security_policy(list(SIGN_ENCRYPT_POLICIES))
        server.set_certificate_validator(TrustList(trusted_dir(data_dir)))
        refuse_unsecured_sessions(server.iserver)
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        log.warning("OPC UA security is OFF ([opcua] security = \"none\"): passwords and "
                    "commands cross the network in clear text; for tests and demos on "
                    "loopback only")
    methods = MeterMethods(commands, settings.decimals, 10 ** settings.decimals)
    model = ParkModel(server, state, decimals=settings.decimals, currency=settings.currency,
                      handlers=methods.handlers())
    began = time.perf_counter()
    # The address space is a million long-lived objects for 100,000 meters: the collector
    # would walk them again and again while they are made, and at every later full
    # collection. So none runs during the build, and what it built is frozen out of its
    # sight (server/collector.py does the same for the server's own state).
    gc.collect()
    gc.disable()
    try:
        await model.build()
    finally:
        gc.freeze()
        gc.enable()
    build_s = time.perf_counter() - began
    storage.ns = model.ns
    alarms = AlarmConditions(server, model.ns, commands)
    alarms.install()
    log.info("OPC UA address space: %d meters in %.2f s", len(state.current()), build_s)
    await server.start()
    try:
        await alarms.start(state.active_alarms())
        yield OpcUaServer(server, model, alarms, settings.endpoint, build_s)
    finally:
        await server.stop()
