"""What the HTTP side needs of a running park, as structural types.

``protocols`` may not import ``server`` (tests/test_dependencies.py), so the app is given an
:class:`HttpBackend`: the park's operations, its users and login throttle, a source of meter
views, health and statistics readers, each described here by the members the app uses.
``server.web`` builds it from a ``Park``; tests can build one from fakes.

Meter views and audit records are the hub's (``protocols.stream.views``): the API answers in the
hub's shapes. The other records are read through read-only properties, so frozen ``attrs``
classes satisfy them as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from protocols.http.metrics import ParkStatistics
from protocols.http.tenant_page import TenantPageBackend
from protocols.stream.views import AuditRecord, MeterView


class AuditPageLike(Protocol):
    @property
    def entries(self) -> Sequence[AuditRecord]: ...
    @property
    def next(self) -> str | None: ...


class MoneyAckLike(Protocol):
    """``server.ledger.MoneyAck``."""

    @property
    def reference(self) -> str: ...
    @property
    def meter_id(self) -> str: ...
    @property
    def balance(self) -> int: ...
    @property
    def status(self) -> str: ...


class QuotaAnswerLike(Protocol):
    """``server.quotas.QuotaAnswer``."""

    @property
    def reference(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def group(self) -> dict[str, Any]: ...


class ApportionedLike(Protocol):
    """``server.apportion.Apportioned``."""

    @property
    def period(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def postings(self) -> list[dict[str, Any]]: ...


class CountAnswerLike(Protocol):
    """``server.production.CountAnswer``."""

    @property
    def reference(self) -> str: ...
    @property
    def line(self) -> str: ...
    @property
    def date(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def unit(self) -> str: ...
    @property
    def status(self) -> str: ...


class TenantLinkLike(Protocol):
    """``server.tenant_links.TenantLink``."""

    @property
    def tenant(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def expires_ms(self) -> int: ...
    def path(self) -> str: ...


class LinksRevokedLike(Protocol):
    """``server.tenant_links.LinksRevoked``."""

    @property
    def reference(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def status(self) -> str: ...


class RetryAnswerLike(Protocol):
    """``server.notice_desk.RetryAnswer``."""

    @property
    def reference(self) -> str: ...
    @property
    def notice(self) -> str: ...
    @property
    def status(self) -> str: ...


class Commands(Protocol):
    """``server.operations.Operations``: role checks, journal and audit happen there.

    The caller is whatever :attr:`HttpBackend.caller` made (``server.auth.Caller``); errors
    carry their contract code in ``.code``.
    """

    async def top_up(self, caller: Any, meter_id: str, amount: int,
                     reference: str) -> MoneyAckLike: ...

    def audit_page(self, caller: Any, *, before: str | None = None,
                   limit: int = 50) -> AuditPageLike: ...

    def quota_groups(self, caller: Any) -> list[dict[str, Any]]: ...

    async def request_quota(self, caller: Any, group_id: str, amount: object, reason: object,
                            reference: str) -> QuotaAnswerLike: ...

    async def decide_quota(self, caller: Any, group_id: str, request_id: object, approve: bool,
                           note: object, reference: str) -> QuotaAnswerLike: ...

    async def apportion(self, caller: Any, first: object, end: object) -> ApportionedLike: ...

    async def record_output(self, caller: Any, line: object, day: object, count: object,
                            reference: str) -> CountAnswerLike: ...

    async def create_tenant_link(self, caller: Any, tenant: object,
                                 days: object = None) -> TenantLinkLike: ...

    async def revoke_tenant_links(self, caller: Any, tenant: object,
                                  reference: str) -> LinksRevokedLike: ...

    def notices(self, caller: Any) -> dict[str, object]: ...

    async def retry_notices(self, caller: Any, notice_id: object,
                            reference: str) -> RetryAnswerLike: ...


class Authenticator(Protocol):
    """``server.auth.Users``."""

    def authenticate(self, name: str, password: str) -> str | None: ...


class Throttle(Protocol):
    """``server.auth.LoginThrottle``: failed logins per client host."""

    def delay_s(self, host: str, now_ms: int) -> float: ...
    def failed(self, host: str, now_ms: int) -> None: ...
    def succeeded(self, host: str) -> None: ...


@attrs.frozen
class Health:
    journal_available: bool
    meters: int
    faulted: int
    uptime_s: float


HistoryReader = Callable[[str, Mapping[str, str]], Awaitable[dict[str, Any]]]

ReportMaker = Callable[[Any, str, Mapping[str, str]], Awaitable[tuple[str, str]]]

CallerFactory = Callable[[str, str, str], Any]
"""(user, role, client address "host:port") -> the caller record the operations take."""


@attrs.frozen
class HttpBackend:
    operations: Commands
    users: Authenticator
    throttle: Throttle
    caller: CallerFactory
    meters: Callable[[], Mapping[str, MeterView]]
    """The current view of every meter, by id (the hub's stream, or read from the actors)."""
    health: Callable[[], Health]
    statistics: Callable[[], ParkStatistics]
    clock_ms: Callable[[], int]
    """Wall clock in ms (the login throttle's time)."""
    hub_url: str
    """Where the console's websocket goes: ``ws://host:port`` (``wss://`` with TLS). A
    wildcard host (0.0.0.0, ::) is replaced by the host the browser asked for."""
    decimals: int = 2
    languages: tuple[str, ...] = ("en", "zh-CN")
    version: str = "0"
    """The server's version (the OpenAPI document's)."""
    history: HistoryReader | None = None
    """``GET /api/meters/{id}/history``: (meter id, query parameters) -> the answer's body;
    bad parameters raise with their ``code``."""
    report: ReportMaker | None = None
    """``GET /api/reports/{kind}``: (caller, kind, query parameters) -> (body, media type);
    refusals and unbalanced books raise with their ``code``."""
    payment_secrets: Mapping[str, bytes] = attrs.field(factory=dict, repr=False)
    """``[[payment_keys]]``: key id -> its HMAC secret."""
    tenant_meters: Mapping[str, Sequence[str]] = attrs.field(factory=dict)
    """Tenant -> its meters, the main one first."""
    payment_caller: Callable[[str, str], Any] | None = None
    """(payment key id, client address) -> the caller record of a payment integration."""
    tenant_page: TenantPageBackend | None = None
    """The tenants' self-service page (``/t/...``); None: the server has none."""
