"""How the hub and the OPC UA server reach the park: commands through ``park.operations``.

:class:`ParkCommands` runs the operator commands for one channel ("hub", "opcua"): roles,
journal and audit are ``park.operations``'s. :class:`HubBackend` adds ``server.auth``'s users,
sessions and login throttle: ``protocols.ws.backend.Backend`` for a park. When the hub or the
OPC UA server runs in its own process, their commands come back over the pipe and run here all
the same (:func:`command_calls`, ``server.edge_process``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from actors.meter import MeterActor
from persistence.audit import AuditPage
from protocols.ws.backend import Who
from protocols.ws.protocol import AckInfo
from server.app import Park
from server.auth import Caller, HubLogins, LoginThrottle, Role, Sessions, Users
from server.hub_link import ack_row
from server.ledger import CommandAck, MoneyAck
from server.report_calls import BadReportRequest, UnknownReport, run_report


def _ack(ack: CommandAck | MoneyAck, actor: MeterActor) -> AckInfo:
    if isinstance(ack, CommandAck):
        return AckInfo(ack.meter_id, ack.status, ack.balance, ack.relay_closed,
                       ack.relay_reason)
    relay = actor.state.relay  # a top-up's answer: the relay as it is now
    return AckInfo(ack.meter_id, ack.status, ack.balance, relay.closed, relay.reason)


class ParkCommands:
    """The operator commands of one client channel, as ``AckInfo`` answers."""

    def __init__(self, park: Park, channel: str) -> None:
        self._park = park
        self._operations = park.operations
        self._channel = channel
        self.decimals = park.config.server.decimals

    def caller(self, who: Who) -> Caller:
        return Caller(who.user, cast(Role, who.role), self._channel, who.address)

    async def top_up(self, who: Who, meter_id: str, amount: int, reference: str) -> AckInfo:
        ack = await self._operations.top_up(self.caller(who), meter_id, amount, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def set_relay(self, who: Who, meter_id: str, action: str, reason: str,
                        reference: str) -> AckInfo:
        ack = await self._operations.set_relay(self.caller(who), meter_id, action, reason,
                                               reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def reset_lockout(self, who: Who, meter_id: str, reference: str) -> AckInfo:
        ack = await self._operations.reset_lockout(self.caller(who), meter_id, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def ack_alarm(self, who: Who, alarm_id: str, reference: str) -> AckInfo:
        ack = await self._operations.ack_alarm(self.caller(who), alarm_id, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def audit_page(self, who: Who, before: str | None, limit: int) -> AuditPage:
        return self._operations.audit_page(self.caller(who), before=before, limit=limit)

    async def quotas(self, who: Who) -> list[dict[str, Any]]:
        return self._operations.quota_groups(self.caller(who))

    async def request_quota(self, who: Who, group: str, amount: str, reason: str,
                            reference: str) -> tuple[str, dict[str, Any]]:
        answer = await self._operations.request_quota(self.caller(who), group, amount, reason,
                                                      reference)
        return answer.status, answer.group

    async def decide_quota(self, who: Who, group: str, request: str, approve: bool, note: str,
                           reference: str) -> tuple[str, dict[str, Any]]:
        answer = await self._operations.decide_quota(self.caller(who), group, request, approve,
                                                     note, reference)
        return answer.status, answer.group

    async def record_output(self, who: Who, line: str, date: str, count: int,
                            reference: str) -> tuple[str, str, str, int, str]:
        answer = await self._operations.record_output(self.caller(who), line, date, count,
                                                      reference)
        return answer.status, answer.line, answer.date, answer.count, answer.unit

    async def notices(self, who: Who) -> dict[str, Any]:
        return self._operations.notices(self.caller(who))

    async def retry_notices(self, who: Who, notice: str, reference: str) -> tuple[str, str]:
        answer = await self._operations.retry_notices(self.caller(who), notice, reference)
        return answer.notice, answer.status

    async def report(self, who: Who, kind: str, query: Mapping[str, str]) -> tuple[str, str]:
        try:
            return await run_report(self._park, self.caller(who), kind, query)
        except UnknownReport as error:  # (the hub has no "not found": a bad request)
            raise BadReportRequest(str(error)) from None


def command_calls(commands: ParkCommands) -> dict[str, Callable[..., Awaitable[Any]]]:
    """The commands as a helper process's calls (answers as ``ack_row`` tuples)."""

    def call(command: Callable[..., Awaitable[AckInfo]]) -> Callable[..., Awaitable[Any]]:
        async def run(who: Who, *args: Any) -> Any:
            return ack_row(await command(who, *args))
        return run

    return {"top_up": call(commands.top_up), "set_relay": call(commands.set_relay),
            "reset_lockout": call(commands.reset_lockout), "ack_alarm": call(commands.ack_alarm),
            "report": commands.report, "quotas": commands.quotas,
            "request_quota": commands.request_quota, "decide_quota": commands.decide_quota,
            "record_output": commands.record_output, "notices": commands.notices,
            "retry_notices": commands.retry_notices}


class HubBackend(HubLogins, ParkCommands):
    """``protocols.ws.backend.Backend`` for a park."""

    def __init__(self, park: Park, users: Users, sessions: Sessions,
                 throttle: LoginThrottle) -> None:
        HubLogins.__init__(self, users, sessions, throttle)
        ParkCommands.__init__(self, park, "hub")
