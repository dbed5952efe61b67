"""Operator and money commands from every client, in one place: role, command, audit.

Theory of operation
-------------------
The websocket hub, the HTTP API, the OPC UA server and local tools all call
:class:`Operations`; none of them talks to the ledger or a meter actor directly. Each command:

1. checks the caller's role (viewers watch; operators top up and switch; admins also read the
   audit log) — :class:`Forbidden` otherwise;
2. validates its arguments (:class:`BadRequest`) and the meter (``UnknownMeter``);
3. runs through the ledger, so it is durable before it is acknowledged and applied once per
   client reference;
4. writes one :class:`AuditEntry`, whatever the outcome (accepted, duplicate, pending or
   refused with its error code), and tells the audit listeners (the hub's ``audit`` topic).

Errors keep their contract code in ``.code`` so every adapter words them the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import attrs

from actors.effects import ALARM_ID_SEPARATOR, PARK_ALARM_PREFIX, split_alarm_id
from actors.registry import ParkRegistry
from persistence.audit import AuditEntry, AuditLog, AuditPage, Result
from policies.money import format_amount
from server.apportion import Apportioned
from server.auth import Caller, Role
from server.clock import ParkClock
from server.ledger import BadRequest, CommandAck, Ledger, MoneyAck
from server.notice_desk import NoticeDesk, RetryAnswer
from server.production import CountAnswer, ProductionDesk
from server.quotas import QuotaAnswer, QuotaDesk
from server.tenant_links import LinksRevoked, TenantLink, TenantLinkDesk

log = logging.getLogger(__name__)

MAX_REASON_LENGTH: Final = 200
RELAY_ACTIONS: Final = ("open", "auto")

T = TypeVar("T", MoneyAck, CommandAck, QuotaAnswer, Apportioned, CountAnswer, RetryAnswer,
            TenantLink, LinksRevoked)
Apportioner = Callable[[object, object], Awaitable[Apportioned]]
"""(from, to) -> the period's shares, posted (``server.apportion``)."""
AuditListener = Callable[[AuditEntry], None]


class Forbidden(PermissionError):
    """The caller's role does not allow the command; nothing was done."""

    code = "forbidden"


@attrs.frozen
class _Request:
    """What is audited about a command before its outcome is known."""

    command: str
    meter_id: str
    reference: str
    detail: str
    target: str = ""


class Operations:
    def __init__(
        self,
        registry: ParkRegistry,
        ledger: Ledger,
        clock: ParkClock,
        audit: AuditLog,
        quotas: QuotaDesk | None = None,
        apportioner: Apportioner | None = None,
        production: ProductionDesk | None = None,
        *,
        decimals: int = 2,
        tenant_links: TenantLinkDesk | None = None,
    ) -> None:
        self._registry = registry
        self._tenant_links = tenant_links
        self._quotas = quotas
        self._apportioner = apportioner
        self._production = production
        self._ledger = ledger
        self._clock = clock
        self._audit = audit
        self._decimals = decimals
        self.audit_listeners: list[AuditListener] = []
        self.notice_desk: NoticeDesk | None = None
        """Tenant notices' dead letters (``server.notice_desk``), set when notices run."""

    # -- commands ---------------------------------------------------------------------------

    async def top_up(self, caller: Caller, meter_id: str, amount: int,
                     reference: str) -> MoneyAck:
        request = _Request("topup", meter_id, reference, self._amount_text(amount))
        return await self._run(caller, "operator", request, lambda: self._ledger.top_up(
            meter_id, amount, reference, self._clock.wall_ms()))

    async def set_relay(self, caller: Caller, meter_id: str, action: str, reason: str,
                        reference: str) -> CommandAck:
        """``action`` "open" cuts the supply (reason manual) until "auto" hands the relay back
        to the policies (balance, overload, quota)."""
        request = _Request("relay", meter_id, reference, f"{action}: {reason}" if reason
                           else str(action))

        async def command() -> CommandAck:
            if action not in RELAY_ACTIONS:
                raise BadRequest(f"relay action must be 'open' or 'auto', got {action!r}")
            _check_reason(reason)
            return await self._ledger.set_relay(meter_id, action, reason, reference,
                                                self._clock.wall_ms())

        return await self._run(caller, "operator", request, command)

    async def reset_lockout(self, caller: Caller, meter_id: str, reference: str) -> CommandAck:
        request = _Request("reset_lockout", meter_id, reference, "")
        return await self._run(caller, "operator", request, lambda: self._ledger.reset_lockout(
            meter_id, reference, self._clock.wall_ms()))

    async def ack_alarm(self, caller: Caller, alarm_id: str, reference: str) -> CommandAck:
        meter_id = _meter_of_alarm(alarm_id)
        request = _Request("ack_alarm", meter_id, reference, "", target=str(alarm_id))

        async def command() -> CommandAck:
            if not meter_id:
                raise BadRequest(f"not an alarm id: {alarm_id!r} (alarm ids are "
                                 f"'<meter>/<number>')")
            if meter_id == PARK_ALARM_PREFIX:
                raise BadRequest(f"{alarm_id!r} is a park alarm: it clears itself when its "
                                 f"cause ends, and needs no acknowledgement")
            _, local = split_alarm_id(alarm_id)
            return await self._ledger.ack_alarm(meter_id, local, reference,
                                                self._clock.wall_ms())

        return await self._run(caller, "operator", request, command)

    async def replace_meter(self, caller: Caller, meter_id: str, reference: str, *,
                            start_wh: int, final_wh: int = -1, reason: str = "") -> MoneyAck:
        request = _Request("replace_meter", meter_id, reference,
                           f"start {start_wh} Wh, final {final_wh} Wh: {reason}")

        async def command() -> MoneyAck:
            _check_reason(reason)
            return await self._ledger.replace_meter(
                meter_id, reference, self._clock.wall_ms(), start_wh=start_wh,
                final_wh=final_wh, reason=reason)

        return await self._run(caller, "admin", request, command)

    async def request_quota(self, caller: Caller, group_id: str, amount: object,
                            reason: object, reference: str) -> QuotaAnswer:
        """Ask for extra budget for a quota group this month (operators; an admin decides)."""
        request = _Request("quota_request", "", reference,
                           f"amount {_text(amount)}: {_text(reason)}", target=_text(group_id))
        return await self._run(caller, "operator", request, lambda: self._desk().request(
            group_id, amount, reason, caller.user, reference))

    async def decide_quota(self, caller: Caller, group_id: str, request_id: object,
                           approve: bool, note: object, reference: str) -> QuotaAnswer:
        """Approve (the month's limit grows by the amount asked) or reject a request."""
        verb = "approve" if approve else "reject"
        request = _Request("quota_" + verb, "", reference,
                           f"{verb} {_text(request_id)}: {_text(note)}", target=_text(group_id))
        return await self._run(caller, "admin", request, lambda: self._desk().decide(
            group_id, request_id, approve, caller.user, note, reference))

    async def apportion(self, caller: Caller, first: object, end: object) -> Apportioned:
        """Post the period's shares of losses and common areas (admins; once per period)."""
        request = _Request("apportion", "", f"apportion/{_text(first)}..{_text(end)}", "")

        async def command() -> Apportioned:
            if self._apportioner is None:
                raise BadRequest("this server cannot apportion (no data directory)")
            return await self._apportioner(first, end)

        return await self._run(caller, "admin", request, command)

    async def record_output(self, caller: Caller, line: object, day: object, count: object,
                            reference: str) -> CountAnswer:
        """A production line's output on a local day (operators; a later count for the same
        line and day replaces it)."""
        request = _Request("output", "", reference, f"{_text(day)}: {_text(count)}",
                           target=_text(line))

        async def command() -> CountAnswer:
            if self._production is None:
                raise BadRequest("this server takes no production counts")
            return await self._production.record(line, day, count, caller.user, reference)

        return await self._run(caller, "operator", request, command)

    async def create_tenant_link(self, caller: Caller, tenant: object,
                                 days: object = None) -> TenantLink:
        """A new link to a tenant's self-service page (admins; ``[tenant_page] link_days``
        unless ``days`` says otherwise). Nothing is stored: the link is signed."""
        request = _Request("tenant_link", "", "", "" if days is None else f"days {_text(days)}",
                           target=_text(tenant))

        async def command() -> TenantLink:
            return self._links().make_link(tenant, days)

        return await self._run(caller, "admin", request, command)

    async def revoke_tenant_links(self, caller: Caller, tenant: object,
                                  reference: str) -> LinksRevoked:
        """Every link to the tenant's page made so far stops working (admins; journaled,
        idempotent on ``reference``)."""
        request = _Request("tenant_links_revoke", "", reference, "", target=_text(tenant))
        return await self._run(caller, "admin", request, lambda: self._links().revoke(
            tenant, caller.user, reference))

    def _links(self) -> TenantLinkDesk:
        if self._tenant_links is None:
            raise BadRequest("this server has no tenants' page")
        return self._tenant_links

    def quota_groups(self, caller: Caller) -> list[dict[str, object]]:
        """Every quota group as the console shows it (any logged-in role)."""
        return self._desk().views()

    def _desk(self) -> QuotaDesk:
        if self._quotas is None:
            raise BadRequest("this server has no quota groups")
        return self._quotas

    def notices(self, caller: Caller) -> dict[str, object]:
        """Tenant notices' figures and dead letters (admins)."""
        if not caller.may("admin"):
            raise Forbidden("only admins may see the tenant notices' dead letters")
        return self._notice_desk().view()

    async def retry_notices(self, caller: Caller, notice_id: object,
                            reference: str) -> RetryAnswer:
        """Try a dead letter again (``""``: every dead letter); admins, audited."""
        request = _Request("notice_retry", "", _text(reference), f"notice {_text(notice_id)}")

        async def command() -> RetryAnswer:
            return self._notice_desk().retry(notice_id, reference)

        return await self._run(caller, "admin", request, command)

    def _notice_desk(self) -> NoticeDesk:
        if self.notice_desk is None:
            raise BadRequest("this server has no tenant notices")
        return self.notice_desk

    def audit_page(self, caller: Caller, *, before: str | None = None,
                   limit: int = 50) -> AuditPage:
        """Newest first; ``before`` is the ``next`` cursor of the previous page."""
        if not caller.may("admin"):
            raise Forbidden("only admins may read the audit log")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
            raise BadRequest("limit must be a whole number from 1 to 200")
        try:
            return self._audit.page(before, limit)
        except ValueError as error:
            raise BadRequest(str(error)) from None

    # -- the common path ----------------------------------------------------------------------

    async def _run(self, caller: Caller, role: Role, request: _Request,
                   command: Callable[[], Awaitable[T]]) -> T:
        try:
            if not caller.may(role):
                raise Forbidden(f"a {caller.role} may not {_verb(request.command)}; "
                                f"this needs the {role} role")
            answer = await command()
        except Exception as error:
            code = getattr(error, "code", "")
            if not code:  # not one of ours: a bug, audited and re-raised for the adapter
                code = "internal"
            self._record(caller, request, "refused", code, str(error))
            raise
        result: Result = "accepted"
        if answer.status == "duplicate":
            result = "duplicate"
        elif answer.status == "pending":
            result = "pending"
        self._record(caller, request, result)
        return answer

    def _record(self, caller: Caller, request: _Request, result: Result, code: str = "",
                message: str = "") -> None:
        entry = AuditEntry(self._clock.wall_ms(), caller.user, caller.role, caller.channel,
                           caller.address, request.command, _text(request.meter_id),
                           request.target, _text(request.reference), request.detail, result,
                           code, message)
        try:
            self._audit.append_nowait(entry)
        except Exception as error:  # storage down: the command's own answer already says so
            log.error("audit entry not written (%s): %s", error, entry)
        for listener in self.audit_listeners:
            try:
                listener(entry)
            except Exception:
                log.exception("audit listener failed")

    def _amount_text(self, amount: object) -> str:
        if isinstance(amount, int) and not isinstance(amount, bool):
            return "amount " + format_amount(amount, self._decimals)
        return f"amount {amount!r}"


def _check_reason(reason: object) -> None:
    if not isinstance(reason, str):
        raise BadRequest("reason must be text")
    if len(reason) > MAX_REASON_LENGTH:
        raise BadRequest(f"reason longer than {MAX_REASON_LENGTH} characters")


def _meter_of_alarm(alarm_id: object) -> str:
    if not isinstance(alarm_id, str) or ALARM_ID_SEPARATOR not in alarm_id:
        return ""
    return alarm_id.rpartition(ALARM_ID_SEPARATOR)[0]


def _text(value: object) -> str:
    """A field as audited: text as it came, anything else as its repr, cut to 200 chars."""
    text = value if isinstance(value, str) else repr(value)
    return text[:MAX_REASON_LENGTH]


def _verb(command: str) -> str:
    return {"topup": "top up", "relay": "switch relays", "reset_lockout": "reset lockouts",
            "ack_alarm": "acknowledge alarms",
            "replace_meter": "replace meters", "quota_request": "ask for extra quota budget",
            "quota_approve": "approve quota requests",
            "quota_reject": "reject quota requests",
            "apportion": "post apportionments",
            "output": "enter production counts",
            "notice_retry": "retry dead notices",
            "tenant_link": "make links to tenants' pages",
            "tenant_links_revoke": "revoke links to tenants' pages"}.get(command, command)
