"""The terminal console's side of the websocket hub protocol, without the socket.

Theory of operation
-------------------
:class:`ConsoleClient` is a state machine in the style of h11: the I/O layer
(:mod:`protocols.console.session`) tells it that a connection opened (:meth:`connected`),
hands it every text frame (:meth:`receive`) and tells it when the connection is gone
(:meth:`connection_lost`); the client answers with frames to send (:meth:`data_to_send`) and
with :class:`ClientEvent` records for the app. Park data goes into its :class:`ParkModel`.

One connection goes through these states (``receive`` drives every step after the first)::

    OFFLINE --connected()--> AUTHENTICATING --welcome--> SUBSCRIBING --snapshot_done--> LIVE
       ^                           |                                                    |
       |                     error unauthorized                                         |
       |                (token refused: retry once with the password;                   |
       |                 password refused: REFUSED, the console stops trying)           |
       +------------------------- connection_lost() (any state but REFUSED) ------------+

The first ``hello`` carries the password; ``welcome`` returns a session token, and every
reconnect after that says ``hello`` with the token, so the password need not be typed again
(the client keeps it in memory only to fall back when the token has expired).

Every ``subscribe`` asks for ``"batch": true``: the hub then packs its messages into ``batch``
frames. The answer is a snapshot of everything subscribed, ended by ``snapshot_done``; the
model brackets it so that what the snapshot no longer mentions is dropped.

Commands (top-up, relay, lockout reset, alarm acknowledge) carry an id chosen here. They are
remembered until their ``ack`` or ``error`` arrives. When the connection drops first, the
outcome is unknown, so after the next ``welcome`` they are sent again *with the same id*: the
hub applies a command id once and answers a repeat with the first answer, so the operator
never has to guess whether a top-up went through. Viewers cannot command (the client refuses
before anything is sent, and the hub would refuse too).

:class:`Backoff` says how long to wait before the next connection attempt: doubling from
``initial_s`` to ``max_s``, with jitter so that a control room of consoles does not reconnect
in lockstep after a server restart; a ``welcome`` resets it.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import attrs

from protocols.console.model import MalformedMessage, ParkModel

__all__ = [
    "TOPICS",
    "Answered",
    "Backoff",
    "ClientEvent",
    "CommandError",
    "ConnectionState",
    "ConsoleClient",
    "Live",
    "LoginRefused",
    "NotPermitted",
    "PendingCommand",
    "Resent",
    "ServerNotice",
    "Welcomed",
    "check_amount",
]

TOPICS: Final = ("meters", "alarms", "park", "gateways")
COMMANDING_ROLES: Final = frozenset({"operator", "admin"})


class ConnectionState(enum.Enum):
    OFFLINE = "offline"
    AUTHENTICATING = "logging in"
    SUBSCRIBING = "loading"
    LIVE = "live"
    REFUSED = "login refused"


class CommandError(ValueError):
    """A command the console will not send (not connected, bad amount); the message says why."""


class NotPermitted(CommandError):
    """The user's role may not command (viewers)."""


@attrs.frozen
class PendingCommand:
    id: str
    kind: str                 # "topup" | "relay" | "reset_lockout" | "ack_alarm"
    frame: Mapping[str, Any]  # exactly what is (re)sent
    description: str          # "top-up 100.00 to M-0001", for the operator


# --- events for the app --------------------------------------------------------------------

@attrs.frozen
class Welcomed:
    user: str
    role: str


@attrs.frozen
class Live:
    """The snapshot is complete: the model is the park's current state."""


@attrs.frozen
class LoginRefused:
    code: str
    message: str


@attrs.frozen
class Answered:
    """The hub answered a command: ``ok`` with the ``ack``'s fields, or its error."""

    command: PendingCommand
    ok: bool
    code: str                 # "" when ok
    message: str              # the server's message, or a summary of the ack
    answer: Mapping[str, Any]


@attrs.frozen
class Resent:
    """Commands whose answer the last connection did not deliver, sent again (same ids)."""

    commands: tuple[PendingCommand, ...]


@attrs.frozen
class ServerNotice:
    """An error not tied to a command of ours, or a frame we could not read."""

    code: str
    message: str


ClientEvent = Welcomed | Live | LoginRefused | Answered | Resent | ServerNotice


def _new_id() -> str:
    return secrets.token_hex(8)


def check_amount(text: str) -> str:
    """A top-up amount as typed, checked enough to catch typos before it is sent.

    The hub has the final word (the currency's decimals, limits); this only refuses what can
    never be an amount, and returns the text stripped.
    """
    stripped = text.strip()
    try:
        value = Decimal(stripped)
    except InvalidOperation:
        raise CommandError(f"amount is not a number: {text!r} (e.g. 100.00)") from None
    if not value.is_finite() or "e" in stripped.lower():
        raise CommandError(f"amount must be written as digits, e.g. 100.00, not {text!r}")
    if value <= 0:
        raise CommandError(f"amount must be more than zero, not {text!r}")
    return stripped


class ConsoleClient:
    """The hub protocol for one console user, across reconnects (module docstring)."""

    def __init__(self, user: str, password: str, *,
                 new_id: Callable[[], str] = _new_id) -> None:
        self.user = user
        self._password = password
        self._new_id = new_id
        self.state = ConnectionState.OFFLINE
        self.role: str | None = None
        self.token: str | None = None
        self.model = ParkModel()
        self.pending: dict[str, PendingCommand] = {}
        self.malformed = 0   # frames or messages that could not be read (counted, not fatal)
        self._outbox: list[str] = []
        self._hello_with_token = False
        self._subscribe_id = ""

    # --- the connection's life -------------------------------------------------------------

    def connected(self) -> None:
        """A websocket connection is open: say hello (with the token once we have one)."""
        if self.state is ConnectionState.REFUSED:
            raise CommandError("the login was refused; start the console again")
        self.state = ConnectionState.AUTHENTICATING
        if self.token is not None:
            self._hello_with_token = True
            self._send({"type": "hello", "token": self.token})
        else:
            self._hello_password()

    def connection_lost(self) -> None:
        self._outbox.clear()
        if self.state is not ConnectionState.REFUSED:
            self.state = ConnectionState.OFFLINE

    def data_to_send(self) -> list[str]:
        frames, self._outbox = self._outbox, []
        return frames

    @property
    def may_command(self) -> bool:
        return self.role in COMMANDING_ROLES

    # --- frames in -------------------------------------------------------------------------

    def receive(self, text: str) -> list[ClientEvent]:
        try:
            frame = json.loads(text)
        except ValueError:
            self.malformed += 1
            return [ServerNotice("bad_frame", f"the server sent a frame that is not JSON: "
                                              f"{text[:80]!r}")]
        if not isinstance(frame, dict):
            self.malformed += 1
            return [ServerNotice("bad_frame", "the server sent a frame that is not an object")]
        if frame.get("type") == "batch":
            messages = frame.get("messages")
            if not isinstance(messages, list):
                self.malformed += 1
                return [ServerNotice("bad_frame", "a batch frame without a messages list")]
            events: list[ClientEvent] = []
            for message in messages:
                if isinstance(message, dict):
                    events.extend(self._message(message))
                else:
                    self.malformed += 1
            return events
        return self._message(frame)

    def _message(self, message: dict[str, Any]) -> list[ClientEvent]:
        kind = message.get("type")
        try:
            if self.model.apply(message):
                return []
        except MalformedMessage:
            self.malformed += 1
            return []
        if kind == "welcome":
            return self._welcome(message)
        if kind == "snapshot_done":
            if message.get("id") not in (None, self._subscribe_id):
                return []  # the answer to an older subscribe of ours
            self.model.end_snapshot()
            if self.state is ConnectionState.SUBSCRIBING:
                self.state = ConnectionState.LIVE
            return [Live()]
        if kind == "ack":
            return self._answer(message, ok=True)
        if kind == "error":
            return self._error(message)
        # pong, audit entries, audit pages, future types: nothing for this console to do.
        return []

    def _welcome(self, message: dict[str, Any]) -> list[ClientEvent]:
        if self.state is not ConnectionState.AUTHENTICATING:
            return []
        self.role = str(message.get("role", "viewer"))
        token = message.get("token")
        self.token = token if isinstance(token, str) and token else None
        self.user = str(message.get("user") or self.user)
        self.state = ConnectionState.SUBSCRIBING
        self._subscribe_id = self._new_id()
        self.model.begin_snapshot()
        self._send({"type": "subscribe", "id": self._subscribe_id, "topics": list(TOPICS),
                    "batch": True})
        events: list[ClientEvent] = [Welcomed(self.user, self.role)]
        if self.pending:
            for command in self.pending.values():
                self._send(dict(command.frame))
            events.append(Resent(tuple(self.pending.values())))
        return events

    def _error(self, message: dict[str, Any]) -> list[ClientEvent]:
        code = str(message.get("code", "error"))
        text = str(message.get("message", ""))
        if self.state is ConnectionState.AUTHENTICATING and code == "unauthorized":
            if self._hello_with_token:
                # The token expired (or the server restarted): the password still works.
                self.token = None
                self._hello_password()
                return []
            self.state = ConnectionState.REFUSED
            return [LoginRefused(code, text or "wrong user name or password")]
        if message.get("id") in self.pending:
            return self._answer(message, ok=False)
        return [ServerNotice(code, text)]

    def _answer(self, message: dict[str, Any], *, ok: bool) -> list[ClientEvent]:
        command = self.pending.pop(str(message.get("id")), None)
        if command is None:
            return []  # a repeat's answer after we already had the first one
        if not ok:
            return [Answered(command, False, str(message.get("code", "error")),
                             str(message.get("message", "")), message)]
        meter = message.get("meter")
        balance = message.get("balance")
        relay = message.get("relay")
        if isinstance(meter, str) and isinstance(balance, str):
            reason = message.get("relay_reason")
            self.model.apply_balance(meter, balance, relay if isinstance(relay, str) else None,
                                     reason if isinstance(reason, str) else None)
        return [Answered(command, True, "", _ack_words(message), message)]

    # --- commands --------------------------------------------------------------------------

    def top_up(self, meter: str, amount: str) -> PendingCommand:
        amount = check_amount(amount)
        return self._command("topup", {"meter": meter, "amount": amount},
                             f"top-up {amount} to {meter}")

    def open_relay(self, meter: str, reason: str) -> PendingCommand:
        fields: dict[str, Any] = {"meter": meter, "action": "open"}
        if reason.strip():
            fields["reason"] = reason.strip()
        return self._command("relay", fields, f"open the relay of {meter}")

    def auto_relay(self, meter: str) -> PendingCommand:
        return self._command("relay", {"meter": meter, "action": "auto"},
                             f"relay of {meter} back to automatic")

    def reset_lockout(self, meter: str) -> PendingCommand:
        return self._command("reset_lockout", {"meter": meter},
                             f"reset the overload lockout of {meter}")

    def ack_alarm(self, alarm: str) -> PendingCommand:
        return self._command("ack_alarm", {"alarm": alarm}, f"acknowledge alarm {alarm}")

    def _command(self, kind: str, fields: dict[str, Any], description: str) -> PendingCommand:
        if not self.may_command:
            raise NotPermitted(f"{self.user} is a {self.role or 'viewer'}: viewers cannot "
                               "command; log in as an operator")
        if self.state is not ConnectionState.LIVE:
            raise CommandError(f"not connected ({self.state.value}): nothing was sent; try "
                               "again when the console is live")
        command = PendingCommand(self._new_id(), kind,
                                 {"type": kind, "id": "", **fields}, description)
        command = attrs.evolve(command, frame={**command.frame, "id": command.id})
        self.pending[command.id] = command
        self._send(dict(command.frame))
        return command

    # --- helpers ---------------------------------------------------------------------------

    def _hello_password(self) -> None:
        self._hello_with_token = False
        self._send({"type": "hello", "user": self.user, "password": self._password})

    def _send(self, frame: Mapping[str, Any]) -> None:
        self._outbox.append(json.dumps(frame, separators=(",", ":")))


def _ack_words(message: Mapping[str, Any]) -> str:
    parts = [str(message.get("status", "applied"))]
    if isinstance(message.get("balance"), str):
        parts.append(f"balance {message['balance']}")
    if isinstance(message.get("relay"), str):
        reason = message.get("relay_reason")
        parts.append(f"relay {message['relay']}" + (f" ({reason})" if reason else ""))
    return ", ".join(parts)


class Backoff:
    """Delays between connection attempts (module docstring); ``random`` returns [0, 1)."""

    def __init__(self, *, initial_s: float = 0.5, max_s: float = 15.0,
                 random: Callable[[], float] | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._random = random or secrets.SystemRandom().random
        self.attempt = 0

    def next_delay(self) -> float:
        """The wait before the next attempt: 50-100 % of initial * 2**attempt, capped."""
        base = min(self.max_s, self.initial_s * 2.0 ** self.attempt)
        self.attempt += 1
        return base * (0.5 + 0.5 * self._random())

    def reset(self) -> None:
        self.attempt = 0
