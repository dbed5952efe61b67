"""The console's hub protocol client as a state machine: frames in, frames and events out."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from protocols.console.client import (
    Answered,
    Backoff,
    CommandError,
    ConnectionState,
    ConsoleClient,
    Live,
    LoginRefused,
    NotPermitted,
    Resent,
    ServerNotice,
    Welcomed,
    check_amount,
)
from tests.console.fake_hub import meter_message


def _client() -> ConsoleClient:
    counter = itertools.count(1)
    return ConsoleClient("op", "op-secret", new_id=lambda: f"id{next(counter)}")


def _sent(client: ConsoleClient) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in client.data_to_send()]


def _frame(**fields: Any) -> str:
    return json.dumps(fields)


def _batch(*messages: Any) -> str:
    return json.dumps({"type": "batch", "messages": list(messages)})


def _live(client: ConsoleClient, role: str = "operator", token: str = "tok1") -> None:
    client.connected()
    client.data_to_send()
    client.receive(_frame(type="welcome", user="op", role=role, token=token))
    subscribe = _sent(client)[0]
    client.receive(_batch(meter_message("M-1", balance="10.00")))
    client.receive(_frame(type="snapshot_done", id=subscribe["id"]))


def test_login_subscribe_snapshot_live() -> None:
    client = _client()
    assert client.state is ConnectionState.OFFLINE
    client.connected()
    assert _sent(client) == [{"type": "hello", "user": "op", "password": "op-secret"}]
    assert client.state is ConnectionState.AUTHENTICATING
    events = client.receive(_frame(type="welcome", user="op", role="operator", token="tok1"))
    assert events == [Welcomed("op", "operator")]
    assert client.state is ConnectionState.SUBSCRIBING and client.token == "tok1"
    assert _sent(client) == [{"type": "subscribe", "id": "id1",
                              "topics": ["meters", "alarms", "park", "gateways"],
                              "batch": True}]
    assert client.receive(_batch(meter_message("M-1"), meter_message("M-2"))) == []
    assert client.receive(_frame(type="snapshot_done", id="id1")) == [Live()]
    assert client.state is ConnectionState.LIVE
    assert sorted(client.model.meters) == ["M-1", "M-2"]


def test_plain_frames_work_as_well_as_batches() -> None:
    client = _client()
    _live(client)
    client.receive(json.dumps(meter_message("M-1", balance="3.00")))
    assert client.model.meters["M-1"].balance == "3.00"


def test_a_reconnect_says_hello_with_the_token_and_falls_back_to_the_password() -> None:
    client = _client()
    _live(client, token="tok1")
    client.connection_lost()
    assert client.state is ConnectionState.OFFLINE
    client.connected()
    assert _sent(client) == [{"type": "hello", "token": "tok1"}]
    # The token expired: the password is tried once more, on the same connection.
    assert client.receive(_frame(type="error", id=None, code="unauthorized",
                                 message="token expired")) == []
    assert _sent(client) == [{"type": "hello", "user": "op", "password": "op-secret"}]
    assert client.token is None
    events = client.receive(_frame(type="welcome", user="op", role="operator", token="tok2"))
    assert events == [Welcomed("op", "operator")] and client.token == "tok2"


def test_a_refused_password_stops_the_client() -> None:
    client = _client()
    client.connected()
    client.data_to_send()
    events = client.receive(_frame(type="error", id=None, code="unauthorized",
                                   message="wrong user name or password"))
    assert events == [LoginRefused("unauthorized", "wrong user name or password")]
    assert client.state is ConnectionState.REFUSED
    client.connection_lost()
    assert client.state is ConnectionState.REFUSED   # no reconnecting with a bad password
    with pytest.raises(CommandError, match="login was refused"):
        client.connected()


def test_a_command_is_sent_answered_and_its_ack_shows_the_balance() -> None:
    client = _client()
    _live(client)
    command = client.top_up("M-1", " 100.00 ")
    assert _sent(client) == [{"type": "topup", "id": command.id, "meter": "M-1",
                              "amount": "100.00"}]
    assert client.pending == {command.id: command}
    events = client.receive(_frame(type="ack", id=command.id, meter="M-1", status="applied",
                                   balance="110.00", relay="closed", relay_reason=None))
    assert len(events) == 1 and isinstance(events[0], Answered)
    assert events[0].ok and events[0].message == "applied, balance 110.00, relay closed"
    assert client.model.meters["M-1"].balance == "110.00"
    assert not client.pending
    # A late repeat of the answer is ignored.
    assert client.receive(_frame(type="ack", id=command.id, balance="110.00")) == []


def test_every_command_frame() -> None:
    client = _client()
    _live(client)
    client.open_relay("M-1", "maintenance")
    client.open_relay("M-1", "  ")
    client.auto_relay("M-1")
    client.reset_lockout("M-1")
    client.ack_alarm("M-1/3")
    frames = [{k: v for k, v in f.items() if k != "id"} for f in _sent(client)]
    assert frames == [
        {"type": "relay", "meter": "M-1", "action": "open", "reason": "maintenance"},
        {"type": "relay", "meter": "M-1", "action": "open"},
        {"type": "relay", "meter": "M-1", "action": "auto"},
        {"type": "reset_lockout", "meter": "M-1"},
        {"type": "ack_alarm", "alarm": "M-1/3"},
    ]
    assert len(client.pending) == 5


def test_a_refused_command_carries_the_servers_words() -> None:
    client = _client()
    _live(client)
    command = client.reset_lockout("M-1")
    client.data_to_send()
    events = client.receive(_frame(type="error", id=command.id, code="unavailable",
                                   message="storage is down: nothing was done"))
    assert events == [Answered(command, False, "unavailable", "storage is down: nothing was done",
                               {"type": "error", "id": command.id, "code": "unavailable",
                                "message": "storage is down: nothing was done"})]
    assert not client.pending


def test_unanswered_commands_are_resent_with_the_same_id_after_a_reconnect() -> None:
    client = _client()
    _live(client)
    command = client.top_up("M-1", "5.00")
    first = _sent(client)
    client.connection_lost()
    client.connected()
    client.data_to_send()
    events = client.receive(_frame(type="welcome", user="op", role="operator", token="tok2"))
    assert events == [Welcomed("op", "operator"), Resent((command,))]
    frames = _sent(client)
    assert frames[0]["type"] == "subscribe" and frames[1] == first[0]


def test_a_viewer_cannot_command_and_nothing_is_sent() -> None:
    client = ConsoleClient("view", "pw")
    _live(client, role="viewer")
    assert not client.may_command
    for attempt in (lambda: client.top_up("M-1", "1.00"), lambda: client.auto_relay("M-1"),
                    lambda: client.open_relay("M-1", "x"), lambda: client.reset_lockout("M-1"),
                    lambda: client.ack_alarm("M-1/1")):
        with pytest.raises(NotPermitted, match="viewers cannot command"):
            attempt()
    assert client.data_to_send() == [] and not client.pending


def test_commands_need_a_live_connection() -> None:
    client = _client()
    _live(client)
    client.connection_lost()
    with pytest.raises(CommandError, match=r"not connected \(offline\): nothing was sent"):
        client.top_up("M-1", "1.00")


@pytest.mark.parametrize(("text", "words"), [
    ("abc", "not a number"), ("", "not a number"), ("1e3", "written as digits"),
    ("NaN", "written as digits"), ("0", "more than zero"), ("-5", "more than zero"),
])
def test_amounts_that_can_never_be_right_are_refused_before_sending(text: str,
                                                                   words: str) -> None:
    with pytest.raises(CommandError, match=words):
        check_amount(text)
    assert check_amount(" 12.5 ") == "12.5"  # the hub decides the currency's decimals


def test_unreadable_frames_are_counted_not_fatal() -> None:
    client = _client()
    _live(client)
    assert isinstance(client.receive("not json")[0], ServerNotice)
    assert isinstance(client.receive("[1, 2]")[0], ServerNotice)
    assert isinstance(client.receive(_frame(type="batch", messages="x"))[0], ServerNotice)
    assert client.receive(_batch({"type": "meter", "meter": "M-1"}, 7,
                                 meter_message("M-1", balance="1.00"))) == []
    assert client.malformed == 5
    assert client.model.meters["M-1"].balance == "1.00"  # the good message in the batch
    assert client.receive(_frame(type="pong", id="x")) == []
    notice = client.receive(_frame(type="error", id=None, code="bad_request", message="huh"))
    assert notice == [ServerNotice("bad_request", "huh")]


def test_the_snapshot_of_an_older_subscribe_does_not_end_the_current_one() -> None:
    client = _client()
    client.connected()
    client.receive(_frame(type="welcome", user="op", role="admin", token="t"))
    assert client.receive(_frame(type="snapshot_done", id="someone-elses")) == []
    assert client.state is ConnectionState.SUBSCRIBING


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.5, max_s=4.0, random=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    low = Backoff(initial_s=2.0, random=lambda: 0.0)
    assert low.next_delay() == 1.0  # never less than half the base: no reconnect storms
