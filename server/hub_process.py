"""The websocket hub in a process of its own, fed by the park stream (``[hub] isolation``).

``server.edge_process`` runs the child (``server.hub_worker``), feeds it and restarts it;
this module says what is particular to the hub:

* its settings and the users go in the first message (logins are checked in the hub's
  process; sessions live there too, so a restarted hub process has forgotten them and clients
  log in again);
* its calls: the commands of the hub protocol and audit pages, through
  :class:`server.hub_backend.HubBackend` exactly as in-process;
* failed logins go both ways (``server.hub_link``), so one throttle counts HTTP and hub
  guesses together;
* its statistics (ten times a second) stand in for an in-process hub's ``statistics()``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from protocols.ws.hub import HubSettings, HubStatistics, hub_url
from server.config import User
from server.edge_link import INIT
from server.edge_process import Call, EdgeProcess
from server.hub_backend import HubBackend, command_calls
from server.hub_link import LOGIN_FAILED, audit_rows, statistics_of
from server.stream import ParkStream

log = logging.getLogger(__name__)

NO_STATISTICS: Final = HubStatistics(*(0 for _ in attrs.fields(HubStatistics)))


@attrs.frozen
class HubProcessSettings:
    hub: HubSettings  # its ssl_context is not sent: the process loads tls_paths itself
    tls_paths: tuple[str, str] | None
    users: Sequence[User]
    session_ttl_ms: int


class HubProcess(EdgeProcess):
    """Has the in-process hub's ``url``, ``port``, ``statistics()`` and ``on_tick``, so the
    rest of the server does not care where the hub runs."""

    WORKER_MODULE = "server.hub_worker"
    WHAT = "the hub process"

    def __init__(self, settings: HubProcessSettings, stream: ParkStream,
                 backend: HubBackend) -> None:
        self._settings = settings
        self._backend = backend
        self._statistics = NO_STATISTICS
        super().__init__(stream, settings.hub.port)
        backend.throttle.listeners.append(self._http_login_failed)

    @property
    def url(self) -> str:
        return hub_url(self._settings.hub.host, self.port,
                       tls=self._settings.tls_paths is not None)

    def statistics(self) -> HubStatistics:
        """As the hub process last reported them (ten times a second); zeros while it is down."""
        return self._statistics if self.running else NO_STATISTICS

    def init_message(self, port: int) -> tuple[Any, ...]:
        settings = self._settings
        hub = attrs.asdict(settings.hub, filter=lambda field, _: field.name != "ssl_context")
        hub["port"] = port
        users = [(user.name, user.password, user.role) for user in settings.users]
        return (INIT, hub, settings.tls_paths, users, settings.session_ttl_ms,
                self._backend.decimals, logging.getLogger().getEffectiveLevel())

    def calls(self) -> Mapping[str, Call]:
        backend = self._backend

        async def audit_page(who: Any, before: str | None, limit: int) -> Any:
            page = await backend.audit_page(who, before, limit)
            return (audit_rows(page.entries), page.next)

        return {**command_calls(backend), "audit_page": audit_page}

    def on_statistics(self, row: Sequence[Any]) -> None:
        self._statistics = statistics_of(row)

    def on_stopped(self) -> None:
        self._statistics = NO_STATISTICS

    def on_message(self, message: tuple[Any, ...]) -> None:
        if message[0] == LOGIN_FAILED:
            self._backend.throttle.failed_elsewhere(message[1], message[2])
        else:
            super().on_message(message)

    def _http_login_failed(self, host: str, now_ms: int) -> None:
        """The throttle's listener: tell the hub process (it checks its own logins)."""
        self.notify((LOGIN_FAILED, host, now_ms))
