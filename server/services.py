"""The network services of a running park: the stream, the websocket hub, the HTTP side and,
when the config has ``[opcua]``, the OPC UA server (in a process of its own:
``server.opcua_process``).

``open_services(park)`` starts them inside the park's lifetime, for ``wattkeeper serve`` and
``wattkeeper demo``::

    async with open_park(config, alarm_sinks=(log_alarm, inbox)) as park, \\
            open_services(park, inbox=inbox) as services:
        print(services.hub_url, services.http_url)

The hub runs where ``[hub] isolation`` says: in a process of its own by default
(``server.hub_process``), or on this process's trio thread. Either way its commands reach the
park through :class:`server.hub_backend.HubBackend`.
"""

from __future__ import annotations

import errno
import functools
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import attrs
import trio

from protocols.http.metrics import HubFigures, OpcUaFigures
from protocols.http.server import HttpServer
from protocols.opcua.server import OpcUaSettings
from protocols.ws.hub import Hub, HubSettings
from server.app import Park
from server.auth import LoginThrottle, Sessions, Users
from server.config import HubSection, ListenAddress
from server.edge_process import ProcessNotStarted
from server.errors import UserError
from server.hub_backend import HubBackend, ParkCommands
from server.hub_process import HubProcess, HubProcessSettings
from server.opcua_process import OpcUaProcess
from server.stream import AlarmInbox, ParkStream
from server.tls import server_tls_context
from server.web import run_web

log = logging.getLogger(__name__)


def hub_ssl_context(section: HubSection) -> ssl.SSLContext | None:
    """``wss://`` when ``[hub] tls_cert`` and ``tls_key`` are set."""
    if section.tls_cert is None or section.tls_key is None:
        return None
    return server_tls_context(section.tls_cert, section.tls_key,
                              where="[hub] tls_cert, tls_key")


def hub_settings(section: HubSection, **overrides: Any) -> HubSettings:
    settings = HubSettings(
        host=section.listen.host, port=section.listen.port,
        max_frame_bytes=section.max_frame_bytes, meter_rate_hz=section.meter_rate_hz,
        stall_timeout_s=section.stall_timeout_s, max_clients=section.max_clients,
        ssl_context=hub_ssl_context(section))
    return attrs.evolve(settings, **overrides)


@attrs.define
class Services:
    stream: ParkStream
    hub: Hub | HubProcess
    """The hub in this process, or the handle of its own process (``[hub] isolation``): both
    have ``url``, ``port`` and ``statistics()``."""
    hub_url: str
    backend: HubBackend
    http_url: str = ""
    """The console and HTTP API (``[http] listen``, ``server.web``)."""
    opcua: OpcUaProcess | None = None
    """The OPC UA server's process, when the config has ``[opcua]``."""
    opcua_url: str = ""


def start_hub(park: Park, stream: ParkStream, backend: HubBackend,
              overrides: dict[str, Any]) -> Hub | HubProcess:
    """The hub where ``[hub] isolation`` says, subscribed to ``stream``."""
    section = park.config.hub
    settings = hub_settings(section, **overrides)
    hub: Hub | HubProcess
    if section.isolation == "inline":
        hub = Hub(settings, stream, backend, park.clock.wall_ms)
    else:
        # (The context was loaded above, so a bad certificate fails here, in the server.)
        tls = None if section.tls_cert is None or section.tls_key is None else (
            str(section.tls_cert.absolute()), str(section.tls_key.absolute()))
        hub = HubProcess(HubProcessSettings(settings, tls, park.config.users,
                                            section.session_ttl_ms), stream, backend)
    stream.subscribe(hub)
    return hub


def start_opcua(park: Park, stream: ParkStream, endpoint: str | None, *,
                security: str | None = None,
                kind: type[OpcUaProcess] = OpcUaProcess) -> OpcUaProcess:
    """The OPC UA server in its own process, subscribed to ``stream`` (docs/decisions.md);
    ``endpoint`` and ``security`` replace ``[opcua]``'s (benchmarks, tests)."""
    config = park.config
    section = config.opcua
    intervals = {policy.interval_ms for policy in config.policies.values()} or {900_000}
    settings = OpcUaSettings(
        endpoint=endpoint or section.endpoint,
        security=cast(Literal["none", "sign-encrypt"], security or section.security),
        data_dir=str(config.server.data_dir.absolute()), decimals=config.server.decimals,
        currency=config.server.currency, interval_ms=max(intervals),
        certificate=None if section.certificate is None else str(section.certificate.absolute()),
        private_key=None if section.private_key is None else str(section.private_key.absolute()))
    port = urlsplit(settings.endpoint).port
    process = kind(settings, config.users, stream, ParkCommands(park, "opcua"),
                   4840 if port is None else port)
    stream.subscribe(process)
    return process


def opcua_figures(opcua: OpcUaProcess | None) -> OpcUaFigures | None:
    """For /metrics."""
    if opcua is None:
        return None
    statistics = opcua.statistics()
    return OpcUaFigures(statistics.sessions, statistics.events, opcua.restarts)


def hub_figures(hub: Hub | HubProcess) -> HubFigures:
    """For /metrics."""
    statistics = hub.statistics()
    restarts = hub.restarts if isinstance(hub, HubProcess) else 0
    return HubFigures(statistics.clients, statistics.dropped_stalled, restarts)


@asynccontextmanager
async def open_services(
    park: Park,
    *,
    inbox: AlarmInbox | None = None,
    hub_overrides: dict[str, Any] | None = None,
    http_listen: ListenAddress | None = None,
    opcua_endpoint: str | None = None,
) -> AsyncIterator[Services]:
    """Start the stream, the hub and the HTTP side for ``park`` (module docstring); stop them
    on exit. ``hub_overrides`` replace ``HubSettings`` fields (tests: port 0, short stall
    timeout); ``http_listen`` replaces ``[http] listen``, ``opcua_endpoint`` ``[opcua] endpoint``
    (the OPC UA server runs when the config has ``[opcua]``)."""
    config = park.config
    stream = ParkStream(park, inbox=inbox)
    backend = HubBackend(park, Users(config.users),
                         Sessions(config.hub.session_ttl_ms, park.clock.wall_ms),
                         LoginThrottle())
    hub = start_hub(park, stream, backend, hub_overrides or {})
    async with trio.open_nursery() as nursery:
        await nursery.start(stream.run)
        try:
            url: str = await nursery.start(hub.run)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"the hub cannot listen on {config.hub.listen}: the port is "
                                "in use (set [hub] listen to another address)") from None
            raise
        except ProcessNotStarted as error:
            raise UserError(f"{error}; its own log lines are above (or set [hub] isolation "
                            '= "inline")') from None
        opcua = start_opcua(park, stream, opcua_endpoint) if config.opcua.enabled else None
        # Same users, and the same throttle: guessing over HTTP slows the hub's logins too.
        listen = http_listen or config.http.listen
        try:
            http: HttpServer = await nursery.start(functools.partial(
                run_web, park, hub_url=url, users=backend.users, throttle=backend.throttle,
                hub=functools.partial(hub_figures, hub),
                opcua=functools.partial(opcua_figures, opcua), meters=stream.current,
                listen=listen))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"the console cannot listen on {listen}: the port is in use "
                                "(set [http] listen to another address)") from None
            raise
        opcua_url = ""
        if opcua is not None:
            try:
                opcua_url = await nursery.start(opcua.run)
            except OSError as error:
                # (the worker's words name the endpoint)
                raise UserError(f"{error.strerror or error} (set [opcua] endpoint to another "
                                "address)") from None
            except ProcessNotStarted as error:
                raise UserError(f"{error}; its own log lines are above (or remove [opcua] "
                                "from the config)") from None
        try:
            yield Services(stream, hub, url, backend, http.url, opcua, opcua_url)
        finally:
            nursery.cancel_scope.cancel()
