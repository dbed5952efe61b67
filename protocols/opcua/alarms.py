"""The park's alarms as OPC UA alarm conditions (``AlarmConditionType`` events).

Theory of operation
-------------------
Every active alarm of the park (a meter's low balance, zero balance, overload, offline,
tamper; the park's storage alarm) is one *condition*: a node ``alarm:<alarm id>`` and one
event object, re-sent with a new ``EventId`` at each change of its state:

* raised -> ``ActiveState`` true, ``AckedState`` false, ``Retain`` true;
* acknowledged (through OPC UA, the console, the hub: the park acknowledges, the stream says
  so, and only then is the event sent, so one acknowledgement is seen everywhere alike) ->
  ``AckedState`` true;
* cleared -> ``ActiveState`` false, ``Retain`` false; the condition is forgotten.

Events go to subscriptions on the ``Server`` object (where alarm views subscribe) with the
meter (or ``Park``) as ``SourceNode``, and also to subscriptions on the meter or ``Park``
object itself. Severity follows what the alarm threatens (see :data:`SEVERITY`).

The standard ``Acknowledge`` method of ``AcknowledgeableConditionType`` (called on the
condition with its latest ``EventId`` and a comment) runs the park's ``ack_alarm`` command for
the session's user (roles, journal, audit, like every client's). ``ConditionRefresh`` is
asyncua's own: it replays the retained conditions to the asking subscription.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from typing import Any, Final

from asyncua import Server, ua
from asyncua.common import event_objects
from asyncua.server.address_space import AttributeValue, NodeData

from protocols.opcua.callers import current_caller
from protocols.opcua.methods import STATUS_OF_CODE, Commands
from protocols.opcua.model import METER_PREFIX, wall_time
from protocols.stream.views import AlarmView

log = logging.getLogger(__name__)

ALARM_PREFIX: Final = "alarm:"
SEVERITY: Final = {  # OPC UA severity 1..1000
    "storage": 950, "overload": 900, "zero_balance": 800, "quota": 750, "tamper": 700,
    "offline": 600, "loss": 500, "low_balance": 400,
}
MESSAGES: Final = {
    "low_balance": "balance is low", "zero_balance": "balance is exhausted: supply cut",
    "overload": "overload: relay opened", "offline": "meter does not answer",
    "tamper": "tamper evidence", "storage": "storage: money commands are refused",
    "quota": "quota budget: a level reached, or supply cut", "loss": "feeder loss above its "
    "threshold",
}
_TRANSITION_FIELDS: Final = ("EnabledState", "ActiveState", "AckedState", "ConfirmedState")


def _set_state(event: Any, name: str, value: bool, true_text: str, false_text: str,
               when: dt.datetime) -> None:
    setattr(event, f"{name}/Id", value)
    setattr(event, name, ua.LocalizedText(true_text if value else false_text))
    # asyncua declares TransitionTime with a NodeId data type it cannot pack: give it the
    # variant type DateTime it is.
    event.data_types[f"{name}/TransitionTime"] = ua.VariantType.DateTime
    setattr(event, f"{name}/TransitionTime", when)


class AlarmConditions:
    def __init__(self, server: Server, ns: int, commands: Commands) -> None:
        self._server = server
        self._ns = ns
        self._commands = commands
        self._events: dict[str, Any] = {}  # alarm id -> its event object
        self.sent = 0

    def install(self) -> None:
        """Take over the standard Acknowledge method (call before the server starts)."""
        self._server.link_method(
            self._server.get_node(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge),
            self._acknowledge)

    async def start(self, active: Iterable[AlarmView]) -> None:
        for alarm in active:
            await self.apply(alarm)

    async def apply(self, alarm: AlarmView) -> None:
        """One alarm event of the stream."""
        event = self._events.get(alarm.alarm_id)
        when = wall_time(alarm.ts_ms)
        if alarm.state == "cleared":
            if event is None:
                return
            del self._events[alarm.alarm_id]
            _set_state(event, "ActiveState", False, "Active", "Inactive", when)
            event.Retain = False
            await self._send(event, f"{MESSAGES.get(alarm.kind, alarm.kind)}: cleared", when)
            self._forget_node(alarm.alarm_id)
            return
        if event is None:
            event = self._events[alarm.alarm_id] = self._new_event(alarm, when)
            if alarm.acknowledged:
                _set_state(event, "AckedState", True, "Acknowledged", "Unacknowledged", when)
            await self._send(event, self._message(alarm), when)
            return
        if alarm.state == "acknowledged" or alarm.acknowledged:
            if getattr(event, "AckedState/Id"):
                return
            _set_state(event, "AckedState", True, "Acknowledged", "Unacknowledged", when)
            await self._send(event, f"{MESSAGES.get(alarm.kind, alarm.kind)}: acknowledged", when)

    def _message(self, alarm: AlarmView) -> str:
        text = MESSAGES.get(alarm.kind, alarm.kind)
        if alarm.kind == "low_balance" and alarm.level:
            text += f" (level {alarm.level})"
        return f"{text}: {alarm.detail}" if alarm.detail else text

    def _new_event(self, alarm: AlarmView, when: dt.datetime) -> Any:
        ns = self._ns
        source = ua.NodeId(f"{METER_PREFIX}{alarm.meter_id}", ns) if alarm.meter_id \
            else ua.NodeId("Park", ns)
        condition_id = ua.NodeId(f"{ALARM_PREFIX}{alarm.alarm_id}", ns)
        self._add_node(condition_id, alarm)
        event = event_objects.AlarmCondition(sourcenode=source,
                                             severity=SEVERITY.get(alarm.kind, 500))
        event.emitting_node = ua.NodeId(ua.ObjectIds.Server)
        event.SourceName = alarm.meter_id or "Park"
        event.add_property("NodeId", condition_id, ua.VariantType.NodeId)  # the ConditionId
        event.ConditionName = alarm.kind
        event.ConditionClassId = ua.NodeId(ua.ObjectIds.ProcessConditionClassType)
        event.BranchId = ua.NodeId()
        _set_state(event, "EnabledState", True, "Enabled", "Disabled", when)
        _set_state(event, "ActiveState", True, "Active", "Inactive", when)
        _set_state(event, "AckedState", False, "Acknowledged", "Unacknowledged", when)
        _set_state(event, "ConfirmedState", True, "Confirmed", "Unconfirmed", when)
        event.Retain = True
        return event

    def _add_node(self, condition_id: ua.NodeId, alarm: AlarmView) -> None:
        """The condition as a node: Acknowledge is called on it (it needs to exist, not to be
        browsable)."""
        data = NodeData(condition_id)
        data.attributes = {
            ua.AttributeIds.NodeId: AttributeValue(ua.DataValue(
                ua.Variant(condition_id, ua.VariantType.NodeId))),
            ua.AttributeIds.NodeClass: AttributeValue(ua.DataValue(
                ua.Variant(ua.NodeClass.Object, ua.VariantType.Int32))),
            ua.AttributeIds.BrowseName: AttributeValue(ua.DataValue(ua.Variant(
                ua.QualifiedName(alarm.alarm_id, self._ns), ua.VariantType.QualifiedName))),
            ua.AttributeIds.DisplayName: AttributeValue(ua.DataValue(ua.Variant(
                ua.LocalizedText(f"{alarm.kind} {alarm.alarm_id}"),
                ua.VariantType.LocalizedText))),
        }
        self._server.iserver.aspace[condition_id] = data

    def _forget_node(self, alarm_id: str) -> None:
        node_id = ua.NodeId(f"{ALARM_PREFIX}{alarm_id}", self._ns)
        aspace = self._server.iserver.aspace
        if node_id in aspace:
            del aspace[node_id]

    async def _send(self, event: Any, message: str, when: dt.datetime) -> None:
        event.EventId = uuid.uuid4().bytes
        event.Time = when
        event.ReceiveTime = dt.datetime.now(dt.UTC)
        event.Message = ua.LocalizedText(message)
        service = self._server.iserver.subscription_service
        await service.trigger_event(event)  # Server subscribers; kept for ConditionRefresh
        on_source = copy.copy(event)
        on_source.emitting_node = event.SourceNode
        for subscription in list(service.subscriptions.values()):
            await subscription.monitored_item_srv.trigger_event(on_source)
        self.sent += 1

    async def _acknowledge(self, parent: ua.NodeId, event_id: ua.Variant,
                           comment: ua.Variant | None = None) -> Any:
        identifier = parent.Identifier
        alarm_id = identifier[len(ALARM_PREFIX):] if isinstance(identifier, str) \
            and identifier.startswith(ALARM_PREFIX) else ""
        event = self._events.get(alarm_id)
        if event is None:
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown if alarm_id
                                 else ua.StatusCodes.BadNodeIdInvalid)
        if not isinstance(event_id, ua.Variant) or event_id.Value != event.EventId:
            return ua.StatusCode(ua.StatusCodes.BadEventIdUnknown)
        if getattr(event, "AckedState/Id"):
            return ua.StatusCode(ua.StatusCodes.BadConditionBranchAlreadyAcked)
        who = current_caller()
        if who is None:
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        try:
            await self._commands.ack_alarm(who, alarm_id, f"opcua-{uuid.uuid4().hex}")
        except Exception as error:
            status = STATUS_OF_CODE.get(getattr(error, "code", ""))
            if status is None:
                log.exception("OPC UA acknowledge of %s failed", alarm_id)
                status = ua.StatusCodes.BadInternalError
            return ua.StatusCode(status)
        if comment is not None and isinstance(comment.Value, ua.LocalizedText):
            event.Comment = comment.Value
        event.ClientUserId = who.user
        return []
