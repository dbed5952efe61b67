"""How the hub reaches the server: ``protocols.ws.backend.Backend`` for a park.

``server.auth`` for users, sessions and the login throttle, ``park.operations`` for every
command (roles, journal, audit). The hub itself decides nothing about roles. When the hub runs
in its own process, its commands come back over the pipe and run here all the same
(``server.hub_process``).
"""

from __future__ import annotations

from actors.meter import MeterActor
from persistence.audit import AuditPage
from protocols.ws.backend import Who
from protocols.ws.protocol import AckInfo
from server.app import Park
from server.auth import HubLogins, LoginThrottle, Sessions, Users, hub_caller
from server.ledger import CommandAck, MoneyAck


def _ack(ack: CommandAck | MoneyAck, actor: MeterActor) -> AckInfo:
    if isinstance(ack, CommandAck):
        return AckInfo(ack.meter_id, ack.status, ack.balance, ack.relay_closed,
                       ack.relay_reason)
    relay = actor.state.relay  # a top-up's answer: the relay as it is now
    return AckInfo(ack.meter_id, ack.status, ack.balance, relay.closed, relay.reason)


class HubBackend(HubLogins):
    """``protocols.ws.backend.Backend`` for a park."""

    def __init__(self, park: Park, users: Users, sessions: Sessions,
                 throttle: LoginThrottle) -> None:
        super().__init__(users, sessions, throttle)
        self._park = park
        self._operations = park.operations
        self.decimals = park.config.server.decimals

    async def top_up(self, who: Who, meter_id: str, amount: int, reference: str) -> AckInfo:
        ack = await self._operations.top_up(hub_caller(who), meter_id, amount, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def set_relay(self, who: Who, meter_id: str, action: str, reason: str,
                        reference: str) -> AckInfo:
        ack = await self._operations.set_relay(hub_caller(who), meter_id, action, reason,
                                               reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def reset_lockout(self, who: Who, meter_id: str, reference: str) -> AckInfo:
        ack = await self._operations.reset_lockout(hub_caller(who), meter_id, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def ack_alarm(self, who: Who, alarm_id: str, reference: str) -> AckInfo:
        ack = await self._operations.ack_alarm(hub_caller(who), alarm_id, reference)
        return _ack(ack, self._park.registry.get(ack.meter_id))

    async def audit_page(self, who: Who, before: str | None, limit: int) -> AuditPage:
        return self._operations.audit_page(hub_caller(who), before=before, limit=limit)
