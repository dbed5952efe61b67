"""Fault records for the park simulator, and their compact text form.

Theory of operation
-------------------
A fault is a record (:class:`Fault`): *what* goes wrong (``kind``), *where* (a gateway, and a
unit behind it for meter faults), *when* (``at_s`` after injection or scenario start) and for
*how long* (``for_s``; None = until cleared). Applying it is the park's job
(``simulators.park``); this module only names the faults and reads their text form, which is
the same on the command line (``wattkeeper sim --fault``) and in scenario files::

    TARGET:KIND[:KEY=VALUE,KEY=VALUE...]

    gw1/3:overload:power=45000,for=5s     unit 3 behind gateway gw1 shows 45 kW for 5 s
    gw1/3:silent                          unit 3 stops answering (until cleared)
    gw1:down,for=10s                      gateway gw1 closes its port for 10 s
    gw1/3:slow:delay=800ms,at=2s          from 2 s on, unit 3 answers 800 ms late
    gw1/3:garbage                         unit 3's replies are bytes that are not Modbus
    gw1/3:rollback:to=0                   unit 3 was replaced: its register restarts at 0 kWh
    gw1/3:tamper                          unit 3 raises its tamper flag
    gw1/3:garble:value=3e38,for=3s        unit 3's energy register shows 3e38 kWh for 3 s
    gw1/3:swap:add=5000                   unit 3 was swapped: its register jumps 5,000 kWh up

The parameters may follow the kind after a ``:`` or a ``,`` (``gw1:down,for=10s`` and
``gw1:down:for=10s`` are the same). ``TARGET`` is ``GATEWAY/UNIT`` for meter faults and
``GATEWAY`` for ``down``; the gateway is its id (``gw1``... for ``wattkeeper sim --gateways``,
the config's ids with ``--config``). Durations are the one grammar of every file we read
(``protocols.toml.values``), and need a unit: ``800ms``, ``5s``, ``1.5s``, ``2m``, ``1h``.
Powers are watts, optionally with a unit: ``45000``, ``45000W``, ``45kW``.

Errors are :class:`FaultSpecError` naming the spec and the part that is wrong, with an example.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Literal

import attrs

from protocols.toml.values import parse_duration_s, suggest

__all__ = [
    "FAULT_KINDS",
    "GATEWAY_FAULTS",
    "METER_FAULTS",
    "REPLY_FAULTS",
    "Fault",
    "FaultKind",
    "FaultSpecError",
    "fault_from_fields",
    "fault_parameters",
    "parse_duration",
    "parse_fault",
    "parse_faults",
    "parse_power",
]

FaultKind = Literal[
    "overload", "silent", "slow", "garbage", "rollback", "tamper", "garble", "swap", "down"
]

METER_FAULTS: Final = (
    "overload", "silent", "slow", "garbage", "rollback", "tamper", "garble", "swap"
)
GATEWAY_FAULTS: Final = ("down",)
FAULT_KINDS: Final = METER_FAULTS + GATEWAY_FAULTS
REPLY_FAULTS: Final = ("silent", "slow", "garbage")
"""Faults of the wire (the gateway answers differently), as opposed to the meter's registers."""

# kind -> (required parameters, optional parameters besides at/for)
_PARAMETERS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "overload": (frozenset({"power"}), frozenset()),
    "silent": (frozenset(), frozenset()),
    "slow": (frozenset({"delay"}), frozenset()),
    "garbage": (frozenset(), frozenset()),
    "rollback": (frozenset(), frozenset({"to"})),
    "tamper": (frozenset(), frozenset()),
    "garble": (frozenset(), frozenset({"value"})),
    "swap": (frozenset({"add"}), frozenset()),
    "down": (frozenset(), frozenset()),
}
_TIMING: Final = frozenset({"at", "for"})
_INSTANT: Final = frozenset({"rollback", "swap"})
"""Faults that happen once and have no duration (a replaced meter stays replaced)."""
GARBLE_KWH: Final = 3e38
"""What a garbled energy register shows by default: finite, near float32's maximum (a bit
error in the exponent or a misaligned read gives values like it)."""

_EXAMPLES: Final = {
    "overload": "gw1/3:overload:power=45000,for=5s",
    "silent": "gw1/3:silent:for=10s",
    "slow": "gw1/3:slow:delay=800ms",
    "garbage": "gw1/3:garbage:for=3s",
    "rollback": "gw1/3:rollback:to=0",
    "tamper": "gw1/3:tamper",
    "garble": "gw1/3:garble:value=3e38,for=3s",
    "swap": "gw1/3:swap:add=5000",
    "down": "gw1:down,for=10s",
}

_POWER: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(W|kW|MW)?\s*$")
_POWER_UNITS: Final = {None: 1.0, "W": 1.0, "kW": 1000.0, "MW": 1_000_000.0}
FLOAT32_MAX: Final = 3.4028234663852886e38
_GATEWAY_ID: Final = re.compile(r"^[A-Za-z0-9_.\-]+$")


class FaultSpecError(ValueError):
    """A fault spec that cannot be understood; the message says which part and why.

    ``key`` is the parameter (or ``kind``, ``target``) at fault when there is one, and
    ``reason`` the message without it: a scenario file puts that on the key's own line."""

    def __init__(self, message: str, *, key: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.reason = message if reason is None else reason


@attrs.frozen
class Fault:
    """One fault (module docstring). Times are wall seconds; ``power_w`` in W (L/h for water).

    ``unit`` is None for gateway faults. Only the parameters of ``kind`` are set: ``power_w``
    for overload, ``delay_s`` for slow, ``to_kwh`` for rollback, ``value_kwh`` for garble (what
    the energy register shows instead of the truth, any finite float32, negative too) and
    ``add_kwh`` for swap (how far the register jumps up); energies are in the profile's energy
    unit (kWh, or m3 for water).
    """

    kind: FaultKind
    gateway: str
    unit: int | None = None
    at_s: float = 0.0
    for_s: float | None = None
    power_w: float | None = None
    delay_s: float | None = None
    to_kwh: float | None = None
    value_kwh: float | None = None
    add_kwh: float | None = None

    @property
    def target(self) -> str:
        """``gw1/3`` or ``gw1``, as written in specs."""
        return self.gateway if self.unit is None else f"{self.gateway}/{self.unit}"

    def spec(self) -> str:
        """The fault in its text form (``parse_fault(fault.spec()) == fault``)."""
        params: list[str] = []
        if self.power_w is not None:
            params.append(f"power={_number(self.power_w)}")
        if self.delay_s is not None:
            params.append(f"delay={_duration_text(self.delay_s)}")
        if self.to_kwh is not None:
            params.append(f"to={_number(self.to_kwh)}")
        if self.value_kwh is not None:
            params.append(f"value={self.value_kwh!r}")
        if self.add_kwh is not None:
            params.append(f"add={_number(self.add_kwh)}")
        if self.at_s:
            params.append(f"at={_duration_text(self.at_s)}")
        if self.for_s is not None:
            params.append(f"for={_duration_text(self.for_s)}")
        text = f"{self.target}:{self.kind}"
        return f"{text}:{','.join(params)}" if params else text


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _duration_text(seconds: float) -> str:
    millis = seconds * 1000.0
    if millis == int(millis) and seconds < 1.0:
        return f"{int(millis)}ms"
    return f"{_number(seconds)}s"


def parse_duration(value: object, *, what: str = "duration") -> float:
    """Seconds from ``800ms``, ``5s``, ``1.5s``, ``2m``, ``1h``: the grammar of
    ``protocols.toml.values``, with its errors as :class:`FaultSpecError` naming ``what``."""
    try:
        return parse_duration_s(value)
    except ValueError as error:
        raise FaultSpecError(f"{what}: {error}", key=what, reason=str(error)) from None


def parse_power(text: str) -> float:
    """Watts from ``45000``, ``45000W``, ``45kW``."""
    match = _POWER.match(text)
    if match is None:
        raise FaultSpecError(f"power={text!r} is not a power; write watts, e.g. 45000 or 45kW")
    return float(match.group(1)) * _POWER_UNITS[match.group(2)]


def _parse_target(target: str) -> tuple[str, int | None]:
    gateway, slash, unit_text = target.partition("/")
    if not gateway or not _GATEWAY_ID.match(gateway):
        raise FaultSpecError(
            f"target {target!r}: expected GATEWAY/UNIT (e.g. gw1/3) or GATEWAY (e.g. gw1)"
        )
    if not slash:
        return gateway, None
    if not unit_text.isdigit() or not 0 <= int(unit_text) <= 255:
        raise FaultSpecError(f"target {target!r}: the unit must be a number 0..255, e.g. gw1/3")
    return gateway, int(unit_text)


def parse_fault(spec: str) -> Fault:
    """A :class:`Fault` from its text form; :class:`FaultSpecError` says what is wrong."""
    try:
        return _parse_fault(spec.strip())
    except FaultSpecError as error:
        raise FaultSpecError(f"fault {spec!r}: {error}") from None


def _parse_fault(spec: str) -> Fault:
    if not spec:
        raise FaultSpecError("empty; write TARGET:KIND[:PARAMS], e.g. gw1/3:silent")
    target, colon, rest = spec.partition(":")
    if not colon or not rest:
        raise FaultSpecError(
            f"no fault kind after the target; write TARGET:KIND, one of {', '.join(FAULT_KINDS)}"
        )
    # The kind ends at the next ':' or ','; what follows is KEY=VALUE pairs.
    match = re.match(r"^([^:,]*)[:,]?(.*)$", rest)
    assert match is not None  # the pattern matches any string
    kind, params_text = match.group(1).strip(), match.group(2)
    params: dict[str, str] = {}
    for item in params_text.split(","):
        item = item.strip()
        if not item:
            continue
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key or not value.strip():
            raise FaultSpecError(f"parameter {item!r} is not KEY=VALUE (e.g. for=5s)")
        if key in params:
            raise FaultSpecError(f"parameter {key!r} given twice")
        params[key] = value.strip()
    return fault_from_fields(kind, target, params)


def fault_parameters(kind: str) -> frozenset[str] | None:
    """The parameters ``kind`` takes (``at`` and, unless it is instant, ``for`` too), or None
    for a kind that does not exist."""
    if kind not in _PARAMETERS:
        return None
    required, optional = _PARAMETERS[kind]
    return required | optional | (_TIMING - ({"for"} if kind in _INSTANT else set()))


def fault_from_fields(kind: str, target: str, params: Mapping[str, object]) -> Fault:
    """A :class:`Fault` from a kind, a target and parameters given as text or numbers.

    Numbers (from a TOML scenario) are taken as W for ``power``, kWh for ``to`` and are refused
    for durations (a unit is required there, as in ``for = "5s"``).
    """
    allowed = fault_parameters(kind)
    if allowed is None:
        message = (
            f"unknown fault kind {kind!r}{suggest(kind, FAULT_KINDS)} "
            f"(known: {', '.join(FAULT_KINDS)})"
        )
        raise FaultSpecError(message, key="kind")
    try:
        gateway, unit = _parse_target(target)
    except FaultSpecError as error:
        raise FaultSpecError(str(error), key="target") from None
    if kind in GATEWAY_FAULTS and unit is not None:
        raise FaultSpecError(
            f"{kind} is a gateway fault: the target is a gateway, e.g. gw1", key="target"
        )
    if kind in METER_FAULTS and unit is None:
        raise FaultSpecError(
            f"{kind} is a meter fault: the target needs a unit, e.g. {_EXAMPLES[kind]}",
            key="target",
        )
    required, _optional = _PARAMETERS[kind]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise FaultSpecError(
            f"{kind} does not take {', '.join(unknown)} "
            f"(it takes {', '.join(sorted(allowed)) or 'no parameters'}; e.g. {_EXAMPLES[kind]})"
        )
    missing = sorted(required - set(params))
    if missing:
        raise FaultSpecError(f"{kind} needs {', '.join(missing)}; e.g. {_EXAMPLES[kind]}")

    def duration(key: str) -> float | None:
        return parse_duration(params[key], what=key) if key in params else None

    def number(key: str, parse: Callable[[str], float]) -> float | None:
        if key not in params:
            return None
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise FaultSpecError(f"{key}={value!r} is not a number", key=key)
        try:
            result = parse(value) if isinstance(value, str) else float(value)
        except FaultSpecError as error:
            raise FaultSpecError(str(error), key=key) from None
        if not math.isfinite(result) or result < 0.0:
            raise FaultSpecError(f"{key}={value!r} must be a finite number >= 0", key=key)
        return result

    at_s = duration("at") or 0.0
    for key in ("for", "delay"):
        seconds = duration(key)
        if seconds is not None and seconds <= 0.0:
            raise FaultSpecError(f"{key}={params[key]!r} must be longer than 0", key=key)
    for_s, delay_s = duration("for"), duration("delay")
    return Fault(
        kind=kind,  # type: ignore[arg-type]  # checked against _PARAMETERS above
        gateway=gateway,
        unit=unit,
        at_s=at_s,
        for_s=for_s,
        power_w=number("power", parse_power),
        delay_s=delay_s,
        to_kwh=(number("to", _parse_plain_number) or 0.0) if kind == "rollback" else None,
        value_kwh=_garble_value(params.get("value")) if kind == "garble" else None,
        add_kwh=number("add", _parse_add) if kind == "swap" else None,
    )


def _garble_value(value: object) -> float:
    """A garbled register's value: any finite float32 (negative ones too), default 3e38."""
    if value is None:
        return GARBLE_KWH
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FaultSpecError(f"value={value!r} is not a number")
    try:
        result = float(value)
    except ValueError:
        raise FaultSpecError(f"value={value!r} is not a number (kWh, e.g. 3e38)") from None
    if not math.isfinite(result) or abs(result) > FLOAT32_MAX:
        raise FaultSpecError(f"value={value!r} must be a finite float32 (|value| <= 3.4e38)")
    return result


def _parse_plain_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FaultSpecError(f"to={text!r} is not a number (kWh, or m3 for water)") from None


def _parse_add(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FaultSpecError(f"add={text!r} is not a number (kWh, or m3 for water)") from None


def parse_faults(specs: Iterable[str]) -> list[Fault]:
    """Every spec parsed, in order (the first bad one raises)."""
    return [parse_fault(spec) for spec in specs]
