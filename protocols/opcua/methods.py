"""The meter methods: ``TopUp``, ``OpenRelay``, ``AutoRelay``, ``ResetLockout``, ``AckAlarm``.

Each is one node on ``MeterType`` shared by every meter (``protocols.opcua.model``); asyncua
passes the meter object that was called. A handler checks the arguments (asyncua checks
nothing against the declared ``InputArguments``), takes the caller from the session
(``protocols.opcua.callers``) and runs the command through the same path as every other
client: the server's ``park.operations`` (roles, journal, audit), reached over the pipe to the
server (:class:`Commands`). Every failure is a Bad status with its reason in the diagnostic
info, never an exception out of the handler (which asyncua would answer
``BadUnexpectedError``):

=================  ====================================================================
bad argument       ``BadInvalidArgument`` (the argument's own result ``BadTypeMismatch``
                   or ``BadOutOfRange``)
no login / role    ``BadUserAccessDenied``
unknown meter      ``BadNodeIdUnknown``
conflict           ``BadInvalidState`` (a reference re-used for another command)
unavailable        ``BadResourceUnavailable`` (storage down: nothing was done)
overloaded         ``BadTooManyOperations`` (send it again with the same reference)
=================  ====================================================================

``TopUp``'s amount is a Double, as the contract says; it must be exactly a decimal of at most
the currency's decimals (``repr`` of the Double: 100.5 is fine, 0.30000000000000004 is
refused), so no rounding ever decides how much money moves. ``OpenRelay``, ``AutoRelay`` and
``ResetLockout`` have no reference in the contract's signatures: each call gets a fresh one,
so they are journaled and audited like the hub's, but a retry is a second command (harmless:
they set a state).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, Protocol

from asyncua import ua

from policies.money import MoneyError, parse_positive_amount
from protocols.opcua.callers import current_caller
from protocols.opcua.model import meter_id_of
from protocols.ws.backend import Who
from protocols.ws.protocol import MAX_ID_LENGTH, MAX_TEXT_LENGTH, AckInfo

log = logging.getLogger(__name__)


class Commands(Protocol):
    """The server's side of the methods (``server.opcua_worker`` calls it over the pipe);
    failures raise an exception with the hub protocol's ``code``."""

    async def top_up(self, who: Who, meter_id: str, amount: int, reference: str) -> AckInfo: ...

    async def set_relay(self, who: Who, meter_id: str, action: str, reason: str,
                        reference: str) -> AckInfo: ...

    async def reset_lockout(self, who: Who, meter_id: str, reference: str) -> AckInfo: ...

    async def ack_alarm(self, who: Who, alarm_id: str, reference: str) -> AckInfo: ...


STATUS_OF_CODE: Final = {
    "bad_request": ua.StatusCodes.BadInvalidArgument,
    "unauthorized": ua.StatusCodes.BadUserAccessDenied,
    "forbidden": ua.StatusCodes.BadUserAccessDenied,
    "unknown_meter": ua.StatusCodes.BadNodeIdUnknown,
    "conflict": ua.StatusCodes.BadInvalidState,
    "unavailable": ua.StatusCodes.BadResourceUnavailable,
    "overloaded": ua.StatusCodes.BadTooManyOperations,
}


class Refused(Exception):
    """A call answered with a Bad status (and, for an argument, which one and why)."""

    def __init__(self, status: int, message: str, argument: int | None = None,
                 argument_status: int = ua.StatusCodes.BadTypeMismatch) -> None:
        super().__init__(message)
        self.status = status
        self.argument = argument
        self.argument_status = argument_status


def refusal(error: Refused, arguments: int) -> ua.CallMethodResult:
    result = ua.CallMethodResult()
    result.StatusCode = ua.StatusCode(error.status)
    if error.argument is not None:
        result.InputArgumentResults = [
            ua.StatusCode(error.argument_status if i == error.argument else ua.StatusCodes.Good)
            for i in range(arguments)]
        result.InputArgumentDiagnosticInfos = [
            ua.DiagnosticInfo(AdditionalInfo=str(error)) if i == error.argument
            else ua.DiagnosticInfo() for i in range(arguments)]
    return result


def _text(arguments: Sequence[ua.Variant], index: int, name: str, limit: int,
          *, required: bool = True) -> str:
    variant = arguments[index]
    if variant.VariantType != ua.VariantType.String or not isinstance(variant.Value, str):
        raise Refused(ua.StatusCodes.BadInvalidArgument,
                      f"{name} must be a String, got {variant.VariantType.name}", index)
    text: str = variant.Value
    if required and not text.strip():
        raise Refused(ua.StatusCodes.BadInvalidArgument, f"{name} must not be empty", index,
                      ua.StatusCodes.BadOutOfRange)
    if len(text) > limit:
        raise Refused(ua.StatusCodes.BadInvalidArgument,
                      f"{name} is longer than {limit} characters", index,
                      ua.StatusCodes.BadOutOfRange)
    return text


def amount_of(variant: ua.Variant, decimals: int) -> int:
    """A Double amount as exact minor units (see the module docstring)."""
    if variant.VariantType not in (ua.VariantType.Double, ua.VariantType.Float) \
            or isinstance(variant.Value, bool) or not isinstance(variant.Value, int | float):
        raise Refused(ua.StatusCodes.BadInvalidArgument,
                      f"amount must be a Double, got {variant.VariantType.name}", 0)
    try:
        return parse_positive_amount(repr(float(variant.Value)), decimals)
    except MoneyError as error:
        raise Refused(ua.StatusCodes.BadInvalidArgument, str(error), 0,
                      ua.StatusCodes.BadOutOfRange) from None


Handler = Callable[..., Coroutine[Any, Any, Any]]


class MeterMethods:
    """The handlers, by method name, for ``protocols.opcua.model.ParkModel``."""

    def __init__(self, commands: Commands, decimals: int, scale: int) -> None:
        self._commands = commands
        self._decimals = decimals
        self._scale = scale

    def handlers(self) -> dict[str, Handler]:
        return {"TopUp": self._wrap(self._top_up, 2), "OpenRelay": self._wrap(self._open, 1),
                "AutoRelay": self._wrap(self._auto, 0),
                "ResetLockout": self._wrap(self._reset, 0),
                "AckAlarm": self._wrap(self._ack, 1)}

    def _wrap(self, run: Callable[[Who, str, Sequence[ua.Variant]], Coroutine[Any, Any, Any]],
              arguments: int) -> Handler:
        async def handler(parent: ua.NodeId, *args: ua.Variant) -> Any:
            try:
                if len(args) != arguments:
                    raise Refused(ua.StatusCodes.BadArgumentsMissing if len(args) < arguments
                                  else ua.StatusCodes.BadTooManyArguments,
                                  f"expected {arguments} arguments, got {len(args)}")
                meter_id = meter_id_of(parent)
                if meter_id is None:
                    raise Refused(ua.StatusCodes.BadNodeIdInvalid,
                                  "call the method on a meter (Objects/Park/Meters/<id>)")
                who = current_caller()
                if who is None:
                    raise Refused(ua.StatusCodes.BadUserAccessDenied, "log in as a user")
                return await run(who, meter_id, args)
            except Refused as error:
                return refusal(error, arguments)
            except Exception as error:  # the server's answer, with its code
                code = getattr(error, "code", "")
                status = STATUS_OF_CODE.get(code)
                if status is None:
                    log.exception("OPC UA method on %s failed", parent)
                    status = ua.StatusCodes.BadInternalError
                return refusal(Refused(status, str(error)), arguments)

        return handler

    async def _top_up(self, who: Who, meter_id: str, args: Sequence[ua.Variant]) -> Any:
        amount = amount_of(args[0], self._decimals)
        reference = _text(args, 1, "reference", MAX_ID_LENGTH)
        ack = await self._commands.top_up(who, meter_id, amount, reference)
        return [ua.Variant(ack.balance / self._scale, ua.VariantType.Double)]

    async def _open(self, who: Who, meter_id: str, args: Sequence[ua.Variant]) -> Any:
        reason = _text(args, 0, "reason", MAX_TEXT_LENGTH, required=False)
        await self._commands.set_relay(who, meter_id, "open", reason, _fresh_reference())
        return []

    async def _auto(self, who: Who, meter_id: str, args: Sequence[ua.Variant]) -> Any:
        await self._commands.set_relay(who, meter_id, "auto", "", _fresh_reference())
        return []

    async def _reset(self, who: Who, meter_id: str, args: Sequence[ua.Variant]) -> Any:
        await self._commands.reset_lockout(who, meter_id, _fresh_reference())
        return []

    async def _ack(self, who: Who, meter_id: str, args: Sequence[ua.Variant]) -> Any:
        alarm_id = _text(args, 0, "alarmId", MAX_ID_LENGTH)
        await self._commands.ack_alarm(who, alarm_id, _fresh_reference())
        return []


def _fresh_reference() -> str:
    return f"opcua-{uuid.uuid4().hex}"
