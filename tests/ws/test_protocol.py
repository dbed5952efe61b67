"""The sans-I/O protocol: parsing, the transition table, encoding."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.stream.views import MeterView
from protocols.ws.protocol import (
    TRANSITIONS,
    AckAlarm,
    AckInfo,
    AuditQuery,
    Hello,
    MeterEncoder,
    NoticeList,
    NoticeRetry,
    OutputCount,
    Ping,
    ProtocolError,
    QuotaDecision,
    QuotaList,
    QuotaRequest,
    Relay,
    ReportQuery,
    ResetLockout,
    SessionState,
    Step,
    Subscribe,
    TopUp,
    batch_frame,
    encode_ack,
    encode_error,
    iso_ms,
    meter_message,
    next_step,
    parse_frame,
)

LIMIT = 65_536


def parse(frame: object) -> object:
    return parse_frame(json.dumps(frame), max_bytes=LIMIT)


def test_the_contracts_frames_parse_as_written() -> None:
    assert parse({"type": "hello", "user": "op", "password": "op-secret"}) == Hello(
        None, "op", "op-secret")
    assert parse({"type": "hello", "token": "abc"}) == Hello(None, token="abc")
    assert parse({"type": "subscribe", "topics": ["meters", "alarms"],
                  "meters": ["M-0001"]}) == Subscribe(
        None, frozenset({"meters", "alarms"}), frozenset({"M-0001"}), None, None, False)
    assert parse({"type": "topup", "id": "a1f3", "meter": "M-0001",
                  "amount": "100.00"}) == TopUp("a1f3", "M-0001", 100_00, "100.00")
    assert parse({"type": "relay", "id": "b2", "meter": "M-0001", "action": "open",
                  "reason": "maintenance"}) == Relay("b2", "M-0001", "open", "maintenance")
    assert parse({"type": "relay", "id": "c3", "meter": "M-0001", "action": "auto"}) == Relay(
        "c3", "M-0001", "auto", "")
    assert parse({"type": "ack_alarm", "id": "d4", "alarm": "M-0001/3"}) == AckAlarm(
        "d4", "M-0001/3")
    assert parse({"type": "reset_lockout", "id": "e5", "meter": "M-0001"}) == ResetLockout(
        "e5", "M-0001")
    assert parse({"type": "audit", "id": 7, "before": "12", "limit": 20}) == AuditQuery(
        7, "12", 20)
    assert parse({"type": "ping"}) == Ping(None)


def test_subscribe_defaults_and_filters() -> None:
    sub = parse({"type": "subscribe", "id": "s", "tenant": "acme", "gateway": "gw1",
                 "batch": True})
    assert isinstance(sub, Subscribe)
    assert sub.topics == {"meters", "alarms", "park", "gateways"}
    assert (sub.meters, sub.tenant, sub.gateway, sub.batch) == (None, "acme", "gw1", True)


@pytest.mark.parametrize(("frame", "words"), [
    ('{"type":"topup","id":"x","meter":"M","amount":"1e3"}', "exponent"),
    ('{"type":"topup","id":"x","meter":"M","amount":"abc"}', "not a number"),
    ('{"type":"topup","id":"","meter":"M","amount":"1.00"}', '"id"'),
    ('{"type":"topup","id":5,"meter":"M","amount":"1.00"}', '"id"'),
    ('{"type":"relay","id":"x","meter":"M"}', '"action"'),
    ('{"type":"relay","id":"x","meter":"M","action":"open","reason":5}', '"reason"'),
    ('{"type":"hello","user":"op"}', '"password"'),
    ('{"type":"subscribe","topics":"meters"}', "list"),
    ('{"type":"subscribe","meters":[1,2]}', "meter ids"),
    ('{"type":"subscribe","batch":"yes"}', '"batch"'),
    ('{"type":"audit","limit":true}', "limit"),
    ('{"type":"ack_alarm","id":"x","alarm":"M\\u0000/1"}', "control"),
    ('{"type":"topup","id":"x","meter":"\\ud800","amount":"1.00"}', "Unicode"),
    ("[" * 100_000 + "]" * 100_000, "larger than"),
    ("[" * 30_000 + "]" * 30_000, "not JSON"),
    ('{"type":"ping","id":' + "9" * 5000 + "}", "not JSON"),
])
def test_bad_frames_are_bad_requests(frame: str, words: str) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_frame(frame, max_bytes=LIMIT)
    assert error.value.code == "bad_request"
    assert words in str(error.value)


def test_error_ids_are_echoed_only_when_readable() -> None:
    for raw, echoed in (("x", "x"), (12, 12), (None, None), (True, None), ([1], None),
                        ("a" * 200, None), (2**60, None)):
        with pytest.raises(ProtocolError) as error:
            parse_frame(json.dumps({"type": "nope", "id": raw}), max_bytes=LIMIT)
        assert error.value.frame_id == echoed


def test_the_limit_counts_utf8_bytes() -> None:
    frame = json.dumps({"type": "ping", "id": "电" * 30}, ensure_ascii=False)
    assert len(frame) < 100 < len(frame.encode())
    with pytest.raises(ProtocolError, match="larger than the limit of 100"):
        parse_frame(frame, max_bytes=100)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "subscribe", "topup", "relay", "ack_alarm",
                              "reset_lockout", "audit", "ping", "other"]) | st.text()},
    optional={key: json_values for key in ("id", "user", "password", "token", "topics",
                                            "meters", "tenant", "gateway", "batch", "meter",
                                            "amount", "action", "reason", "alarm", "before",
                                            "limit")})


@given(json_values | frame_like)
def test_any_json_parses_or_is_a_protocol_error(value: object) -> None:
    try:
        frame = parse_frame(json.dumps(value), max_bytes=LIMIT)
    except ProtocolError as error:
        assert error.code == "bad_request"
        json.loads(encode_error(error.frame_id, error.code, str(error)))  # answerable
        return
    assert isinstance(frame, Hello | Subscribe | TopUp | Relay | AckAlarm | ResetLockout
                      | AuditQuery | Ping)


@given(st.text() | st.binary())
def test_any_text_or_bytes_parses_or_is_a_protocol_error(data: str | bytes) -> None:
    try:
        parse_frame(data, max_bytes=LIMIT)
    except ProtocolError as error:
        assert error.code == "bad_request"


def test_transition_table() -> None:
    hello, ping = Hello(None, "op", "pw"), Ping(1)
    topup = TopUp("t", "M", 1, "0.01")
    before, after = SessionState.AWAITING_HELLO, SessionState.AUTHENTICATED
    assert next_step(before, hello) is Step.LOGIN
    assert next_step(before, ping) is Step.REFUSE_UNAUTHORIZED
    assert next_step(before, topup) is Step.REFUSE_UNAUTHORIZED
    assert next_step(after, hello) is Step.REFUSE_REPEATED_HELLO
    assert next_step(after, topup) is Step.COMMAND
    assert next_step(after, ping) is Step.PONG
    # Every frame kind has a step in every state.
    kinds = {Hello, Subscribe, TopUp, Relay, AckAlarm, ResetLockout, AuditQuery, ReportQuery,
             QuotaList, QuotaRequest, QuotaDecision, OutputCount, NoticeList, NoticeRetry,
             Ping}
    assert set(TRANSITIONS) == {(state, kind) for state in SessionState for kind in kinds}


VIEW = MeterView("M-\"1\"", "租户", "gw1", -5, 1234.5, 12_345, False, "zero_balance",
                 "zero_balance", True, False, 1_795_000_000_123)


def test_the_meter_template_matches_the_plain_encoding() -> None:
    encoder = MeterEncoder(2)
    assert json.loads(encoder.encode(VIEW)) == meter_message(VIEW, 2)
    message = json.loads(encoder.encode(VIEW))
    assert (message["balance"], message["energy_kwh"], message["relay"], message["ts"]) == (
        "-0.05", 12.345, "open", "2026-11-18T11:06:40.123Z")
    odd = MeterView("M", "t", "g", 0, float("inf"), 0, True, None, "none", False, True, 0)
    assert json.loads(encoder.encode(odd)) == meter_message(odd, 2)
    assert meter_message(odd, 2)["power_w"] is None


def test_iso_timestamps_and_answers() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1_795_000_000_007) == "2026-11-18T11:06:40.007Z"
    ack = json.loads(encode_ack("a1", AckInfo("M-1", "applied", 18765, True, None), 2))
    assert ack == {"type": "ack", "id": "a1", "meter": "M-1", "status": "applied",
                   "balance": "187.65", "relay": "closed", "relay_reason": None}
    batch = json.loads(batch_frame([json.dumps({"a": 1}), json.dumps({"b": 2})]))
    assert batch == {"type": "batch", "messages": [{"a": 1}, {"b": 2}]}
