"""What the hub needs from the server, as structural types (the hub cannot import ``server``).

``server.services.HubBackend`` implements :class:`Backend` on top of ``server.auth`` (users,
sessions, login throttle) and ``park.operations`` (role checks, journal, audit). The hub only
carries the caller's identity (:class:`Who`) to it; it decides nothing about roles itself.
Errors raised by the command methods carry the contract's code in ``.code``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from protocols.stream.views import AuditRecord
from protocols.ws.protocol import AckInfo


@attrs.frozen
class Who:
    """An authenticated client: its user, role and ``host:port``."""

    user: str
    role: str
    address: str


class SessionRecord(Protocol):
    @property
    def user(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def expires_ms(self) -> int: ...


class AuditPageRecord(Protocol):
    @property
    def entries(self) -> Sequence[AuditRecord]: ...
    @property
    def next(self) -> str | None: ...


class Backend(Protocol):
    decimals: int

    def authenticate(self, user: str, password: str) -> str | None:
        """The user's role if the password is right (blocking: the hub runs it in a
        thread, a password hash takes ~50 ms)."""
        ...

    def issue_session(self, user: str, role: str) -> tuple[str, int]:
        """A session token and when it expires (ms since the epoch)."""
        ...

    def resume_session(self, token: str) -> SessionRecord | None: ...

    def login_delay_s(self, host: str, now_ms: int) -> float: ...

    def login_failed(self, host: str, now_ms: int) -> None: ...

    def login_succeeded(self, host: str) -> None: ...

    def may_follow_audit(self, who: Who) -> bool:
        """Whether ``who`` may subscribe to the ``audit`` topic (the audit log's rule)."""
        ...

    async def top_up(self, who: Who, meter_id: str, amount: int, reference: str) -> AckInfo: ...

    async def set_relay(self, who: Who, meter_id: str, action: str, reason: str,
                        reference: str) -> AckInfo: ...

    async def reset_lockout(self, who: Who, meter_id: str, reference: str) -> AckInfo: ...

    async def ack_alarm(self, who: Who, alarm_id: str, reference: str) -> AckInfo: ...

    async def report(self, who: Who, kind: str, query: Mapping[str, str]) -> tuple[str, str]:
        """``(body, format)`` of a report (``server.report_calls``)."""
        ...

    async def quotas(self, who: Who) -> list[dict[str, Any]]:
        """Every quota group as ``GET /api/quotas`` shows it."""
        ...

    async def request_quota(self, who: Who, group: str, amount: str, reason: str,
                            reference: str) -> tuple[str, dict[str, Any]]:
        """``(status, group)`` after asking for extra budget."""
        ...

    async def decide_quota(self, who: Who, group: str, request: str, approve: bool, note: str,
                           reference: str) -> tuple[str, dict[str, Any]]:
        """``(status, group)`` after an admin's decision."""
        ...

    async def record_output(self, who: Who, line: str, date: str, count: int,
                            reference: str) -> tuple[str, str, str, int, str]:
        """``(status, line, date, count, unit)`` of a production count as journaled."""
        ...

    async def notices(self, who: Who) -> dict[str, Any]:
        """Tenant notices' figures and dead letters as ``GET /api/notices`` shows them
        (admins)."""
        ...

    async def retry_notices(self, who: Who, notice: str, reference: str) -> tuple[str, str]:
        """``(notice, status)`` after asking the delivery process to try a dead letter again
        (``""``: every one; admins)."""
        ...

    async def audit_page(self, who: Who, before: str | None, limit: int) -> AuditPageRecord:
        """A page of the audit log, newest first (async: in its own process the hub asks the
        server for it)."""
        ...
