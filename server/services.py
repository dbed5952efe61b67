"""The network services of a running park: the stream, the websocket hub, the HTTP side.

``open_services(park)`` starts them inside the park's lifetime, for ``wattkeeper serve`` and
``wattkeeper demo``::

    async with open_park(config, alarm_sinks=(log_alarm, inbox)) as park, \\
            open_services(park, inbox=inbox) as services:
        print(services.hub_url, services.http_url)

:class:`HubBackend` is how the hub reaches the server: ``server.auth`` for users, sessions
and the login throttle, ``park.operations`` for every command (roles, journal, audit). The
hub itself decides nothing about roles.
"""

from __future__ import annotations

import errno
import functools
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import attrs
import trio

from actors.meter import MeterActor
from persistence.audit import AuditPage
from protocols.http.server import HttpServer
from protocols.ws.backend import Who
from protocols.ws.hub import Hub, HubSettings
from protocols.ws.protocol import AckInfo
from server.app import Park
from server.auth import Caller, LoginThrottle, Role, Session, Sessions, Users
from server.config import HubSection, ListenAddress
from server.errors import UserError
from server.ledger import CommandAck, MoneyAck
from server.stream import AlarmInbox, ParkStream
from server.web import run_web

log = logging.getLogger(__name__)


def _caller(who: Who) -> Caller:
    return Caller(who.user, cast(Role, who.role), "hub", who.address)


def _ack(ack: CommandAck | MoneyAck, actor: MeterActor) -> AckInfo:
    if isinstance(ack, CommandAck):
        return AckInfo(ack.meter_id, ack.status, ack.balance, ack.relay_closed,
                       ack.relay_reason)
    relay = actor.state.relay  # a top-up's answer: the relay as it is now
    return AckInfo(ack.meter_id, ack.status, ack.balance, relay.closed, relay.reason)


class HubBackend:
    """``protocols.ws.backend.Backend`` for a park."""

    def __init__(self, park: Park, users: Users, sessions: Sessions,
                 throttle: LoginThrottle) -> None:
        self._park = park
        self._operations = park.operations
        self.users = users
        self.sessions = sessions
        self.throttle = throttle
        self.decimals = park.config.server.decimals

    def authenticate(self, user: str, password: str) -> str | None:
        return self.users.authenticate(user, password)

    def issue_session(self, user: str, role: str) -> tuple[str, int]:
        return self.sessions.issue(user, cast(Role, role))

    def resume_session(self, token: str) -> Session | None:
        return self.sessions.resume(token)

    def login_delay_s(self, host: str, now_ms: int) -> float:
        return self.throttle.delay_s(host, now_ms)

    def login_failed(self, host: str, now_ms: int) -> None:
        self.throttle.failed(host, now_ms)

    def login_succeeded(self, host: str) -> None:
        self.throttle.succeeded(host)

    def may_follow_audit(self, who: Who) -> bool:
        return _caller(who).may("admin")

    async def top_up(self, who: Who, meter_id: str, amount: int, reference: str) -> AckInfo:
        ack = await self._operations.top_up(_caller(who), meter_id, amount, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def set_relay(self, who: Who, meter_id: str, action: str, reason: str,
                        reference: str) -> AckInfo:
        ack = await self._operations.set_relay(_caller(who), meter_id, action, reason,
                                               reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def reset_lockout(self, who: Who, meter_id: str, reference: str) -> AckInfo:
        ack = await self._operations.reset_lockout(_caller(who), meter_id, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def ack_alarm(self, who: Who, alarm_id: str, reference: str) -> AckInfo:
        ack = await self._operations.ack_alarm(_caller(who), alarm_id, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    def audit_page(self, who: Who, before: str | None, limit: int) -> AuditPage:
        return self._operations.audit_page(_caller(who), before=before, limit=limit)


def hub_ssl_context(section: HubSection) -> ssl.SSLContext | None:
    """``wss://`` when ``[hub] tls_cert`` and ``tls_key`` are set."""
    if section.tls_cert is None or section.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(section.tls_cert, section.tls_key)
    except (OSError, ssl.SSLError) as error:
        raise UserError(f"cannot load the hub's TLS certificate [hub] tls_cert = "
                        f"{section.tls_cert}, tls_key = {section.tls_key}: {error}") from None
    return context


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
    hub: Hub
    hub_url: str
    backend: HubBackend
    http_url: str = ""
    """The console and HTTP API (``[http] listen``, ``server.web``)."""


@asynccontextmanager
async def open_services(
    park: Park,
    *,
    inbox: AlarmInbox | None = None,
    hub_overrides: dict[str, Any] | None = None,
    http_listen: ListenAddress | None = None,
) -> AsyncIterator[Services]:
    """Start the stream, the hub and the HTTP side for ``park`` (module docstring); stop them
    on exit. ``hub_overrides`` replace ``HubSettings`` fields (tests: port 0, short stall
    timeout); ``http_listen`` replaces ``[http] listen``."""
    config = park.config
    stream = ParkStream(park, inbox=inbox)
    backend = HubBackend(park, Users(config.users),
                         Sessions(config.hub.session_ttl_ms, park.clock.wall_ms),
                         LoginThrottle())
    hub = Hub(hub_settings(config.hub, **(hub_overrides or {})), stream, backend,
              park.clock.wall_ms)
    stream.subscribe(hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(stream.run)
        try:
            url: str = await nursery.start(hub.run)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"the hub cannot listen on {config.hub.listen}: the port is "
                                "in use (set [hub] listen to another address)") from None
            raise
        # Same users, and the same throttle: guessing over HTTP slows the hub's logins too.
        listen = http_listen or config.http.listen
        try:
            http: HttpServer = await nursery.start(functools.partial(
                run_web, park, hub_url=url, users=backend.users, throttle=backend.throttle,
                hub_clients=lambda: hub.statistics().clients, meters=stream.current,
                listen=listen))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"the console cannot listen on {listen}: the port is in use "
                                "(set [http] listen to another address)") from None
            raise
        try:
            yield Services(stream, hub, url, backend, http.url)
        finally:
            nursery.cancel_scope.cancel()
