"""The hub's wire protocol, without I/O: client frames in, server messages out.

Theory of operation
-------------------
Every client frame is one JSON text object. :func:`parse_frame` turns it into one of the
frozen command records below or raises :class:`ProtocolError` with the contract's code
(``bad_request`` for anything unreadable: not UTF-8 JSON, not an object, too big, an unknown
``type``, a missing or mistyped field). It never raises anything else, whatever the input
(tests/ws/test_protocol.py drives it with hypothesis): the hub answers every bad frame with an
``error`` and carries on, never a crash or a silent drop. Only the *shape* is checked here;
whether a meter exists, a relay action is allowed or a role may act is for
``server.operations``, which audits refusals too. Amounts are the exception: they are parsed
here (``policies.money.parse_amount``) because minor units are what the server takes.

A connection's session has two states; :func:`next_step` is the transition table:

================  ==================  =====================================  ===============
state             frame               step                                   next state
================  ==================  =====================================  ===============
awaiting_hello    hello               LOGIN (password or token)              authenticated
                                                                             (or unchanged)
awaiting_hello    anything else       REFUSE unauthorized                    unchanged
authenticated     hello               REFUSE bad_request (already logged in) unchanged
authenticated     subscribe           SUBSCRIBE (replaces the subscription)  unchanged
authenticated     topup, relay,       COMMAND (park.operations)              unchanged
                  ack_alarm,
                  reset_lockout,
                  audit, report,
                  quotas,
                  quota_request,
                  quota_decide,
                  output,
                  notices,
                  notice_retry
authenticated     ping                PONG                                   unchanged
================  ==================  =====================================  ===============

A frame that cannot be parsed gets ``bad_request`` in either state (it is no command at all).

Server messages are built by the ``encode_*`` functions as compact JSON text. Meter updates
are the bulk of the traffic, so :class:`MeterEncoder` writes them from a template rather than
through ``json.dumps`` of a dict (about three times faster; the tests check that both give
the same object).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs

from policies.money import MoneyError, format_amount, parse_amount
from protocols.stream.views import AlarmView, AuditRecord, GatewayView, MeterView, ParkView

ERROR_CODES: Final = ("bad_request", "unauthorized", "forbidden", "unknown_meter", "conflict",
                      "overloaded", "unavailable", "unbalanced")
"""The contract's error codes; a bug answers ``internal`` (and is logged)."""

TOPICS: Final = ("meters", "alarms", "park", "gateways", "audit")
MAX_ID_LENGTH: Final = 128
MAX_TEXT_LENGTH: Final = 1024
MAX_FILTER_IDS: Final = 100_000
DEFAULT_AUDIT_LIMIT: Final = 50

JsonId = str | int | None


class ProtocolError(ValueError):
    """A frame the hub cannot take; answered ``{"type":"error","id","code","message"}``."""

    def __init__(self, code: str, message: str, frame_id: JsonId = None) -> None:
        super().__init__(message)
        self.code = code
        self.frame_id = frame_id


# --- client frames -------------------------------------------------------------------------


@attrs.frozen
class Hello:
    id: JsonId
    user: str = ""
    password: str = attrs.field(default="", repr=False)
    token: str = attrs.field(default="", repr=False)


@attrs.frozen
class Subscribe:
    id: JsonId
    topics: frozenset[str]
    meters: frozenset[str] | None  # None: no id filter
    tenant: str | None
    gateway: str | None
    batch: bool


@attrs.frozen
class TopUp:
    id: str
    meter: str
    amount: int  # minor units, parsed
    amount_text: str


@attrs.frozen
class Relay:
    id: str
    meter: str
    action: str
    reason: str


@attrs.frozen
class AckAlarm:
    id: str
    alarm: str


@attrs.frozen
class ResetLockout:
    id: str
    meter: str


@attrs.frozen
class AuditQuery:
    id: JsonId
    before: str | None
    limit: int


@attrs.frozen
class ReportQuery:
    """A report (the same as ``GET /api/reports/KIND``); ``query`` holds the request's
    ``from``, ``to``, ``by``, ``tenant``, ``tariff``, ``format``, ``meter_kind`` and ``shift``
    that were given."""

    id: JsonId
    kind: str
    query: Mapping[str, str]


REPORT_PARAMETERS: Final = ("from", "to", "by", "tenant", "tariff", "format", "meter_kind",
                             "shift")


@attrs.frozen
class QuotaList:
    """Every quota group this month (any role)."""

    id: JsonId


@attrs.frozen
class QuotaRequest:
    """Ask for ``amount`` more of a group's budget this month (in its unit), with a reason."""

    id: str
    group: str
    amount: str
    reason: str


@attrs.frozen
class OutputCount:
    """A production line's output on a local day (``date``: "2026-11-10")."""

    id: str
    line: str
    date: str
    count: int


@attrs.frozen
class QuotaDecision:
    """An admin approves or rejects a group's pending request ``request``."""

    id: str
    group: str
    request: str
    approve: bool
    note: str


@attrs.frozen
class NoticeList:
    """Tenant notices' figures and dead letters (admins)."""

    id: JsonId


@attrs.frozen
class NoticeRetry:
    """Try a dead letter again: ``notice`` is its notice id, ``""`` every dead letter."""

    id: str
    notice: str


@attrs.frozen
class Ping:
    id: JsonId


ClientFrame = (Hello | Subscribe | TopUp | Relay | AckAlarm | ResetLockout | AuditQuery
               | ReportQuery | QuotaList | QuotaRequest | QuotaDecision | OutputCount
               | NoticeList | NoticeRetry | Ping)
Command = (TopUp | Relay | AckAlarm | ResetLockout | AuditQuery | ReportQuery | QuotaList
           | QuotaRequest | QuotaDecision | OutputCount | NoticeList | NoticeRetry)


def parse_frame(data: str | bytes, *, max_bytes: int, decimals: int = 2) -> ClientFrame:
    """One client frame as a command record; :class:`ProtocolError` when it is not one."""
    if isinstance(data, bytes):
        raise ProtocolError("bad_request", "frames must be JSON text, not binary")
    size = len(data) if data.isascii() else _utf8_size(data)
    if size > max_bytes:
        raise ProtocolError("bad_request",
                            f"frame of {size} bytes is larger than the limit of {max_bytes}")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, huge ints, deep nesting
        raise ProtocolError("bad_request", f"not JSON: {_short(str(error))}") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_request", "a frame must be a JSON object")
    frame_id = _echo_id(value.get("id"))
    kind = value.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        if not isinstance(kind, str):
            raise ProtocolError("bad_request", 'a frame needs a "type" (text)', frame_id)
        raise ProtocolError("bad_request", f"unknown message type {_short(repr(kind))}; "
                            f"known: {', '.join(sorted(_PARSERS))}", frame_id)
    fields = _Fields(value, frame_id)
    return parser(fields, decimals)


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _echo_id(value: object) -> JsonId:
    """The id to echo in an answer: a readable one as given, anything else as null."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) < 1 << 53:  # what a JS client can read back
        return value
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and _clean(value):
        return value
    return None


def _clean(text: str) -> bool:
    """Encodable (no lone surrogates) and without control characters."""
    if text.isascii():
        return text.isprintable()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return text.isprintable()


class _Fields:
    def __init__(self, value: dict[str, object], frame_id: JsonId) -> None:
        self.value = value
        self.id = frame_id

    def fail(self, message: str) -> ProtocolError:
        return ProtocolError("bad_request", message, self.id)

    def text(self, key: str, *, required: bool = True, default: str = "",
             limit: int = MAX_TEXT_LENGTH, empty: bool = False) -> str:
        if key not in self.value:
            if required:
                raise self.fail(f'missing "{key}"')
            return default
        value = self.value[key]
        if not isinstance(value, str):
            raise self.fail(f'"{key}" must be text')
        if not value and not empty:
            raise self.fail(f'"{key}" must not be empty')
        if len(value) > limit:
            raise self.fail(f'"{key}" is longer than {limit} characters')
        if not _clean(value):
            raise self.fail(f'"{key}" contains control characters or is not valid Unicode')
        return value

    def reference(self) -> str:
        """The client's ``id`` of a journaled command: required, text (it is the reference
        the command is applied once for)."""
        if "id" not in self.value:
            raise self.fail('missing "id" (a client-chosen reference, so a retry is safe)')
        value = self.value["id"]
        if not isinstance(value, str) or not value.strip():
            raise self.fail('"id" of a command must be non-empty text')
        if len(value) > MAX_ID_LENGTH:
            raise self.fail(f'"id" is longer than {MAX_ID_LENGTH} characters')
        if not _clean(value):
            raise self.fail('"id" contains control characters or is not valid Unicode')
        return value

    def optional_text(self, key: str) -> str | None:
        if self.value.get(key) is None:
            return None
        return self.text(key, limit=MAX_ID_LENGTH)


def _hello(f: _Fields, decimals: int) -> Hello:
    if "token" in f.value and "password" not in f.value:
        return Hello(f.id, token=f.text("token", limit=MAX_ID_LENGTH))
    return Hello(f.id, user=f.text("user", limit=MAX_ID_LENGTH), password=f.text("password"))


def _subscribe(f: _Fields, decimals: int) -> Subscribe:
    raw_topics = f.value.get("topics", ["meters", "alarms", "park", "gateways"])
    if not isinstance(raw_topics, list) or not all(isinstance(t, str) for t in raw_topics):
        raise f.fail('"topics" must be a list of topic names')
    unknown = sorted({t for t in raw_topics if t not in TOPICS})
    if unknown:
        raise f.fail(f"unknown topic {_short(repr(unknown[0]))}; topics: {', '.join(TOPICS)}")
    meters: frozenset[str] | None = None
    if f.value.get("meters") is not None:
        raw = f.value["meters"]
        if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
            raise f.fail('"meters" must be a list of meter ids')
        if len(raw) > MAX_FILTER_IDS:
            raise f.fail(f'"meters" lists more than {MAX_FILTER_IDS} ids')
        if not all(_clean(m) for m in raw):
            raise f.fail('"meters" contains an id with control characters or invalid Unicode')
        meters = frozenset(raw)
    batch = f.value.get("batch", False)
    if not isinstance(batch, bool):
        raise f.fail('"batch" must be true or false')
    return Subscribe(f.id, frozenset(raw_topics), meters, f.optional_text("tenant"),
                     f.optional_text("gateway"), batch)


def _topup(f: _Fields, decimals: int) -> TopUp:
    reference = f.reference()
    meter = f.text("meter", limit=MAX_ID_LENGTH)
    if "amount" not in f.value:
        raise f.fail('missing "amount" (a decimal string like "100.00")')
    raw = f.value["amount"]
    try:
        amount = parse_amount(raw, decimals)
    except MoneyError as error:
        raise f.fail(str(error)) from None
    assert isinstance(raw, str)  # parse_amount takes nothing else
    return TopUp(reference, meter, amount, raw)


def _relay(f: _Fields, decimals: int) -> Relay:
    reference = f.reference()
    meter = f.text("meter", limit=MAX_ID_LENGTH)
    action = f.text("action", limit=MAX_ID_LENGTH)
    reason = "" if f.value.get("reason") is None else f.text("reason", empty=True)
    return Relay(reference, meter, action, reason)


def _ack_alarm(f: _Fields, decimals: int) -> AckAlarm:
    return AckAlarm(f.reference(), f.text("alarm", limit=MAX_ID_LENGTH + 32))


def _reset_lockout(f: _Fields, decimals: int) -> ResetLockout:
    return ResetLockout(f.reference(), f.text("meter", limit=MAX_ID_LENGTH))


def _audit(f: _Fields, decimals: int) -> AuditQuery:
    limit = f.value.get("limit", DEFAULT_AUDIT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
        raise f.fail('"limit" must be a whole number from 1 to 200')
    return AuditQuery(f.id, f.optional_text("before"), limit)


def _report(f: _Fields, decimals: int) -> ReportQuery:
    query = {key: text for key in REPORT_PARAMETERS
             if (text := f.optional_text(key)) is not None}
    return ReportQuery(f.id, f.text("kind", limit=MAX_ID_LENGTH), query)


def _quotas(f: _Fields, decimals: int) -> QuotaList:
    return QuotaList(f.id)


def _quota_request(f: _Fields, decimals: int) -> QuotaRequest:
    # The amount's unit is the group's (kWh or money): ``server.quotas`` parses it.
    return QuotaRequest(f.reference(), f.text("group", limit=MAX_ID_LENGTH),
                        f.text("amount", limit=32), f.text("reason"))


def _quota_decide(f: _Fields, decimals: int) -> QuotaDecision:
    decision = f.text("decision", limit=16)
    if decision not in ("approve", "reject"):
        raise f.fail('"decision" must be "approve" or "reject"')
    note = "" if f.value.get("note") is None else f.text("note", empty=True)
    return QuotaDecision(f.reference(), f.text("group", limit=MAX_ID_LENGTH),
                         f.text("request", limit=MAX_ID_LENGTH), decision == "approve", note)


def _output(f: _Fields, decimals: int) -> OutputCount:
    """Whether the line and day exist is ``server.production``'s to say."""
    count = f.value.get("count")
    if isinstance(count, bool) or not isinstance(count, int):
        raise f.fail('"count" must be a whole number')
    return OutputCount(f.reference(), f.text("line", limit=MAX_ID_LENGTH),
                       f.text("date", limit=16), count)


def _notices(f: _Fields, decimals: int) -> NoticeList:
    return NoticeList(f.id)


def _notice_retry(f: _Fields, decimals: int) -> NoticeRetry:
    # Required, even for every dead letter (""): a frame that forgot it retries nothing.
    if "notice" not in f.value:
        raise f.fail('missing "notice" (a notice id, or "" for every dead letter)')
    return NoticeRetry(f.reference(), f.text("notice", empty=True))


def _ping(f: _Fields, decimals: int) -> Ping:
    return Ping(f.id)


_PARSERS: Final[dict[str, Callable[[_Fields, int], ClientFrame]]] = {
    "hello": _hello,
    "subscribe": _subscribe,
    "topup": _topup,
    "relay": _relay,
    "ack_alarm": _ack_alarm,
    "reset_lockout": _reset_lockout,
    "audit": _audit,
    "report": _report,
    "quotas": _quotas,
    "quota_request": _quota_request,
    "quota_decide": _quota_decide,
    "output": _output,
    "notices": _notices,
    "notice_retry": _notice_retry,
    "ping": _ping,
}


# --- the session's transition table ------------------------------------------------------------


class SessionState(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    AUTHENTICATED = "authenticated"


class Step(enum.Enum):
    LOGIN = "login"
    SUBSCRIBE = "subscribe"
    COMMAND = "command"
    PONG = "pong"
    REFUSE_UNAUTHORIZED = "refuse_unauthorized"
    REFUSE_REPEATED_HELLO = "refuse_repeated_hello"


_COMMAND_TYPES: Final = (TopUp, Relay, AckAlarm, ResetLockout, AuditQuery, ReportQuery,
                         QuotaList, QuotaRequest, QuotaDecision, OutputCount, NoticeList,
                         NoticeRetry)

TRANSITIONS: Final[Mapping[tuple[SessionState, type], Step]] = {
    (SessionState.AWAITING_HELLO, Hello): Step.LOGIN,
    **{(SessionState.AWAITING_HELLO, kind): Step.REFUSE_UNAUTHORIZED
       for kind in (Subscribe, Ping, *_COMMAND_TYPES)},
    (SessionState.AUTHENTICATED, Hello): Step.REFUSE_REPEATED_HELLO,
    (SessionState.AUTHENTICATED, Subscribe): Step.SUBSCRIBE,
    (SessionState.AUTHENTICATED, Ping): Step.PONG,
    **{(SessionState.AUTHENTICATED, kind): Step.COMMAND for kind in _COMMAND_TYPES},
}


INTERNAL: Final = "internal"


def command_error(error: Exception) -> tuple[str, str] | None:
    """The ``error`` answer (code, message) a failed command's exception carries, or None: a
    bug, which the caller logs and answers ``internal``. An ``internal`` that comes from
    elsewhere (the server, for a hub in its own process) was logged there and passes as is."""
    code = getattr(error, "code", "")
    if code in ERROR_CODES or code == INTERNAL:
        return code, str(error)
    return None


def internal_error(error: Exception) -> tuple[str, str]:
    """The answer to a command that failed with a bug (log it, then send this)."""
    return INTERNAL, f"internal error ({type(error).__name__}); see the server log"


def next_step(state: SessionState, frame: ClientFrame) -> Step:
    """What to do with ``frame`` in ``state`` (the table in the module docstring). A
    successful LOGIN moves the session to AUTHENTICATED; nothing else changes the state."""
    return TRANSITIONS[state, type(frame)]


def refusal(step: Step, frame: ClientFrame, user: str = "") -> ProtocolError:
    """The error for a REFUSE_* step."""
    if step is Step.REFUSE_UNAUTHORIZED:
        return ProtocolError("unauthorized", 'log in first: the first frame must be '
                             '{"type":"hello","user":...,"password":...} or '
                             '{"type":"hello","token":...}', frame.id)
    return ProtocolError("bad_request", f"already logged in as {user}; open another "
                         "connection to log in as someone else", frame.id)


# --- server messages -----------------------------------------------------------------------

_dumps: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_dumps_ascii: Final = json.JSONEncoder(separators=(",", ":")).encode


@functools.lru_cache(maxsize=512)
def _iso_second(second: int) -> str:
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_ms(ts_ms: int) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``: ``2026-11-22T10:15:00.123Z``."""
    second, ms = divmod(ts_ms, 1000)
    return f"{_iso_second(second)}.{ms:03d}Z"


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


class MeterEncoder:
    """``meter`` messages from a template (see the module docstring); the quoted texts of
    each meter (id, tenant, gateway never change) are cached."""

    def __init__(self, decimals: int) -> None:
        self.decimals = decimals
        self._quoted: dict[str, str] = {}

    def _q(self, text: str) -> str:
        quoted = self._quoted.get(text)
        if quoted is None:
            if len(self._quoted) > 1_000_000:  # ids are config-bound; this is a safety net
                self._quoted.clear()
            quoted = self._quoted[text] = _dumps(text)
        return quoted

    def encode(self, v: MeterView) -> str:
        q = self._q
        power = v.power_w if math.isfinite(v.power_w) else None
        reason = "null" if v.relay_reason is None else q(v.relay_reason)
        return (
            f'{{"type":"meter","meter":{q(v.meter_id)},"tenant":{q(v.tenant)},'
            f'"gateway":{q(v.gateway)},"balance":"{format_amount(v.balance, self.decimals)}",'
            f'"power_w":{_dumps(power)},"energy_kwh":{_dumps(v.energy_wh / 1000)},'
            f'"relay":"{"closed" if v.relay_closed else "open"}","relay_reason":{reason},'
            f'"alarm":{q(v.alarm)},"online":{"true" if v.online else "false"},'
            f'"faulted":{"true" if v.faulted else "false"},"ts":"{iso_ms(v.ts_ms)}"}}'
        )


def meter_message(v: MeterView, decimals: int) -> dict[str, object]:
    """The ``meter`` message as a dict (the reference :class:`MeterEncoder` is tested
    against; HTTP's ``/api/meters`` uses the same fields)."""
    return {
        "type": "meter", "meter": v.meter_id, "tenant": v.tenant, "gateway": v.gateway,
        "balance": format_amount(v.balance, decimals), "power_w": _number(v.power_w),
        "energy_kwh": v.energy_wh / 1000, "relay": "closed" if v.relay_closed else "open",
        "relay_reason": v.relay_reason, "alarm": v.alarm, "online": v.online,
        "faulted": v.faulted, "ts": iso_ms(v.ts_ms),
    }


def encode_alarm(a: AlarmView) -> str:
    return _dumps({"type": "alarm", "alarm": a.alarm_id, "meter": a.meter_id, "kind": a.kind,
                   "level": a.level, "state": a.state, "acknowledged": a.acknowledged,
                   "detail": a.detail, "ts": iso_ms(a.ts_ms)})


def encode_park(p: ParkView, decimals: int) -> str:
    return _dumps({"type": "park", "meters": p.meters, "meters_on": p.meters_on,
                   "meters_off": p.meters_off, "meters_offline": p.meters_offline,
                   "load_w": _number(round(p.load_w, 1)),
                   "balance_sum": format_amount(p.balance_sum, decimals),
                   "alarms_active": p.alarms_active, "gateways": p.gateways,
                   "gateways_online": p.gateways_online, "ts": iso_ms(p.ts_ms)})


def encode_gateway(g: GatewayView) -> str:
    return _dumps({"type": "gateway", "gateway": g.gateway_id, "online": g.online,
                   "meters": g.meters, "meters_online": g.meters_online, "polls": g.polls,
                   "failures": g.failures, "ts": iso_ms(g.ts_ms)})


def audit_fields(e: AuditRecord) -> dict[str, object]:
    return {"ts": iso_ms(e.ts_ms), "user": e.user, "role": e.role, "channel": e.channel,
            "address": e.address, "command": e.command, "meter_id": e.meter_id,
            "target": e.target, "reference": e.reference, "detail": e.detail,
            "result": e.result, "code": e.code, "message": e.message}


def encode_audit(e: AuditRecord) -> str:
    # ASCII: an audited field may hold what a client sent (a refused id), escaped safely.
    return _dumps_ascii({"type": "audit", "entry": audit_fields(e)})


def encode_audit_page(frame_id: JsonId, entries: Sequence[AuditRecord], after: str | None) -> str:
    return _dumps_ascii({"type": "audit_page", "id": frame_id,
                         "entries": [audit_fields(e) for e in entries], "next": after})


def encode_report(frame_id: JsonId, form: str, body: str) -> str:
    """A report's answer: ``body`` as ``wattkeeper report --format FORM`` prints it."""
    return _dumps_ascii({"type": "report", "id": frame_id, "format": form, "body": body})


def encode_quotas(frame_id: JsonId, groups: Sequence[Mapping[str, object]]) -> str:
    """Every quota group (the same objects as ``GET /api/quotas``)."""
    return _dumps_ascii({"type": "quotas", "id": frame_id, "groups": list(groups)})


def encode_quota(frame_id: JsonId, status: str, group: Mapping[str, object]) -> str:
    """The answer to a request or decision: its status and the group right after it."""
    return _dumps_ascii({"type": "quota", "id": frame_id, "status": status, "group": group})


def encode_notices(frame_id: JsonId, view: Mapping[str, object]) -> str:
    """Tenant notices' figures and dead letters (the same object as ``GET /api/notices``)."""
    return _dumps_ascii({"type": "notices", "id": frame_id, **view})


def encode_notice_retry(frame_id: JsonId, notice: str, status: str) -> str:
    """The answer to "try again": the notice id as asked (``""``: every one) and the status."""
    return _dumps_ascii({"type": "notice_retry", "id": frame_id, "notice": notice,
                         "status": status})


def encode_output(frame_id: JsonId, status: str, line: str, date: str, count: int,
                  unit: str) -> str:
    """The answer to a production count: as journaled (a duplicate answers the first)."""
    return _dumps_ascii({"type": "output", "id": frame_id, "status": status, "line": line,
                         "date": date, "count": count, "unit": unit})


def encode_welcome(user: str, role: str, token: str, expires_ms: int) -> str:
    return _dumps({"type": "welcome", "user": user, "role": role, "token": token,
                   "expires": iso_ms(expires_ms)})


@attrs.frozen
class AckInfo:
    """What an ``ack`` says: the meter right after the command (or as first answered)."""

    meter_id: str
    status: str  # "applied" | "duplicate" | "pending"
    balance: int
    relay_closed: bool
    relay_reason: str | None


def encode_ack(frame_id: JsonId, ack: AckInfo, decimals: int, alarm: str | None = None) -> str:
    message: dict[str, object] = {
        "type": "ack", "id": frame_id, "meter": ack.meter_id, "status": ack.status,
        "balance": format_amount(ack.balance, decimals),
        "relay": "closed" if ack.relay_closed else "open", "relay_reason": ack.relay_reason}
    if alarm is not None:
        message["alarm"] = alarm
    return _dumps(message)


def encode_error(frame_id: JsonId, code: str, message: str) -> str:
    # ASCII: messages may quote what the client sent.
    return _dumps_ascii({"type": "error", "id": frame_id, "code": code, "message": message})


def encode_pong(frame_id: JsonId) -> str:
    return _dumps({"type": "pong", "id": frame_id})


def encode_snapshot_done(frame_id: JsonId) -> str:
    return _dumps({"type": "snapshot_done", "id": frame_id})


def batch_frame(messages: Sequence[str]) -> str:
    """Several encoded messages as one ``batch`` frame (no re-encoding: they are joined)."""
    return '{"type":"batch","messages":[' + ",".join(messages) + "]}"
