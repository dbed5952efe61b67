"""Who is calling a method: the OPC UA session's user, carried to the method handlers.

asyncua hands a method callback the object and the arguments, not the session that called.
Each connection's requests are processed one at a time in one task, so a context variable set
around the session's Call service is the caller for every method of that request; sessions
are made of :class:`CallerSession` by replacing the server's ``create_session`` (the one place
asyncua makes them). The user manager (``protocols.opcua.security``) returns a
:class:`ParkUser`, which keeps the park's role next to asyncua's: asyncua's own role is always
``User``, never ``Admin``, so no client may add or delete nodes or write attributes.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_session import InternalSession

from protocols.ws.backend import Who


@dataclasses.dataclass
class ParkUser(User):  # type: ignore[misc]  # (asyncua is checked as untyped)
    park_role: str = "viewer"


_session: contextvars.ContextVar[InternalSession | None] = contextvars.ContextVar(
    "opcua_session", default=None)


class CallerSession(InternalSession):  # type: ignore[misc]  # (as above)
    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        token = _session.set(self)
        try:
            results: list[ua.CallMethodResult] = await super().call(params)
            return results
        finally:
            _session.reset(token)


def install_caller_sessions(server: Server) -> None:
    iserver = server.iserver

    def create_session(name: Any, user: User = User(role=UserRole.Anonymous),  # noqa: B008 (asyncua's default)
                       external: bool = False) -> InternalSession:
        return CallerSession(iserver, iserver.aspace, iserver.subscription_service, name,
                             user=user, external=external)

    iserver.create_session = create_session


def current_caller() -> Who | None:
    """The user calling the method being run (None: not a client's call, or no login)."""
    session = _session.get()
    if session is None or not isinstance(session.user, ParkUser):
        return None
    user = session.user
    peer = session.name
    address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
    return Who(user.name or "", user.park_role, address)
