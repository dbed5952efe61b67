"""Who is calling: users and roles, password hashes, session tokens, slowed-down guessing.

Theory of operation
-------------------
Every adapter (websocket hub, HTTP, OPC UA) authenticates the same way, here, and hands the
result on as a :class:`Caller`: the user, the role, the channel and the client's address. That
record travels with every command into ``server.operations``, which checks the role and writes
the audit log; adapters never decide what a role may do.

Passwords. ``[[users]] password`` may be written in plain text (the contract's example, fine for
a demo) or as a hash made by ``wattkeeper passwd``: ``scrypt$N$r$p$<salt>$<key>`` (stdlib
``hashlib.scrypt``, base64 without padding). No comparison leaks timing
(``hmac.compare_digest``); see :class:`Users`.

Sessions. ``welcome`` returns a random token; a client that reconnects says ``hello`` with the
token instead of the password. Tokens live in memory with a time to live: a restart of the
server asks everyone to log in again, which is what a restart should mean.

Guessing. :class:`LoginThrottle` counts failed logins per client host and tells the adapter how
long to wait before it answers the next attempt (doubling from 0.25 s up to 8 s); a success
resets the host. Waiting before answering costs an attacker time without costing the server a
thread, and a legitimate user who mistyped once notices nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final, Literal, Protocol, cast

import attrs

from protocols.ws.backend import Who

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: Final[dict[str, int]] = {"viewer": 0, "operator": 1, "admin": 2}

HASH_PREFIX: Final = "scrypt$"
# RFC 7914's interactive parameters: ~50 ms and 16 MiB per login on the 2-core target.
SCRYPT_N: Final = 1 << 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
MAX_PASSWORD_BYTES: Final = 1024


@attrs.frozen
class Caller:
    """Who asked: carried by every command into the operations and the audit log."""

    user: str
    role: Role
    channel: str  # "hub" | "http" | "opcua" | "payment" | "cli"
    address: str = ""  # the client's "host:port"; "" when local

    def may(self, role: Role) -> bool:
        """Whether this caller has at least ``role``."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


SYSTEM: Final = Caller("", "admin", "cli")
"""The server itself and local tools (``wattkeeper`` commands run by the park's owner)."""


def may_follow_audit(role: str) -> bool:
    """The audit log's rule for the hub's ``audit`` topic (as for its pages): admins only."""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK["admin"]


class ConfiguredUser(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def password(self) -> str: ...

    @property
    def role(self) -> str: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r + (1 << 20), dklen=KEY_BYTES)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The text to put in ``[[users]] password`` instead of the password itself."""
    if not password:
        raise ValueError("a password must not be empty")
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{HASH_PREFIX}{SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def is_hash(stored: str) -> bool:
    return stored.startswith(HASH_PREFIX)


def check_hash(stored: str) -> str | None:
    """Why ``stored`` is not a usable hash (for the config reader), or None."""
    parts = stored.split("$")
    if len(parts) != 6:
        return "a password hash has the form scrypt$N$r$p$salt$key (made by `wattkeeper passwd`)"
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return "the password hash is damaged (not numbers and base64); make it again with " \
               "`wattkeeper passwd`"
    if n < 2 or n & (n - 1) or n > 1 << 20 or not 1 <= r <= 64 or not 1 <= p <= 16:
        return f"the password hash's scrypt parameters N={n} r={r} p={p} are out of range"
    if len(salt) < 8 or len(key) < 16:
        return "the password hash's salt or key is too short"
    return None


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (a hash from :func:`hash_password`)."""
    if check_hash(stored) is not None or len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    _, n, r, p, salt, key = stored.split("$")
    derived = _derive(password, _unb64(salt), int(n), int(r), int(p))
    return hmac.compare_digest(derived, _unb64(key))


class Users:
    """The configured users and how to check their passwords.

    Hashed entries are checked with scrypt. Plain-text entries (demo configs) are compared as
    SHA-256 digests with ``hmac.compare_digest``, which takes the same time whatever the
    guess; hashing them with scrypt at start would cost every park start ~50 ms per user for
    no gain (the plain text is in the config file anyway). An unknown name is checked against
    a decoy of the slowest kind configured, so its answer takes as long as a wrong password.
    """

    def __init__(self, users: Sequence[ConfiguredUser]) -> None:
        self._users: dict[str, tuple[str, Role]] = {
            user.name: (user.password, cast(Role, user.role)) for user in users}
        hashed = any(is_hash(stored) for stored, _ in self._users.values())
        self._decoy = hash_password(secrets.token_hex(8)) if hashed else secrets.token_hex(16)

    def __contains__(self, name: object) -> bool:
        return name in self._users

    def __len__(self) -> int:
        return len(self._users)

    def role_of(self, name: str) -> Role | None:
        found = self._users.get(name)
        return None if found is None else found[1]

    def authenticate(self, name: str, password: str) -> Role | None:
        """The user's role when the password is right, else None."""
        if not isinstance(name, str) or not isinstance(password, str):
            return None
        stored, role = self._users.get(name, (self._decoy, "viewer"))
        if is_hash(stored):
            ok = verify_password(stored, password)
        else:
            ok = hmac.compare_digest(_digest(stored), _digest(password))
        return role if ok and name in self._users else None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@attrs.frozen
class Session:
    user: str
    role: Role
    expires_ms: int


class Sessions:
    """Session tokens for reconnects, kept in memory (a restart logs everyone out)."""

    def __init__(self, ttl_ms: int, clock_ms: Callable[[], int], *,
                 max_sessions: int = 100_000) -> None:
        self._ttl_ms = ttl_ms
        self._clock_ms = clock_ms
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def issue(self, user: str, role: Role) -> tuple[str, int]:
        """A new token for ``user`` and when it expires (ms since the epoch)."""
        token = secrets.token_urlsafe(32)
        expires = self._clock_ms() + self._ttl_ms
        self._sessions[token] = Session(user, role, expires)
        while len(self._sessions) > self._max:  # the oldest sessions go first
            self._sessions.popitem(last=False)
        return token, expires

    def resume(self, token: str) -> Session | None:
        """The session of a live token, or None (unknown, revoked or expired)."""
        session = self._sessions.get(token)
        if session is None:
            return None
        if session.expires_ms <= self._clock_ms():
            del self._sessions[token]
            return None
        return session

    def revoke(self, token: str) -> None:
        self._sessions.pop(token, None)

    def revoke_user(self, user: str) -> int:
        """End every session of ``user`` (a removed or demoted user); how many there were."""
        tokens = [token for token, session in self._sessions.items() if session.user == user]
        for token in tokens:
            del self._sessions[token]
        return len(tokens)


FIRST_DELAY_S: Final = 0.25
MAX_DELAY_S: Final = 8.0
FORGET_AFTER_MS: Final = 15 * 60_000
MAX_TRACKED_HOSTS: Final = 10_000


@attrs.frozen
class _Failures:
    count: int
    last_ms: int


class LoginThrottle:
    """Failed logins per client host -> how long to wait before answering the next one.

    Pure: the caller passes the time in. A host is forgotten 15 minutes after its last
    failure; at most ``MAX_TRACKED_HOSTS`` are tracked (the oldest go first), so a scan from
    many addresses cannot grow it without bound.
    """

    def __init__(self) -> None:
        self._hosts: OrderedDict[str, _Failures] = OrderedDict()
        self.listeners: list[Callable[[str, int], None]] = []
        """Told of every failure recorded by :meth:`failed` (the hub's own process keeps a
        throttle of its own, and each side tells the other)."""

    def delay_s(self, host: str, now_ms: int) -> float:
        failures = self._hosts.get(host)
        if failures is None:
            return 0.0
        if now_ms - failures.last_ms > FORGET_AFTER_MS:
            del self._hosts[host]
            return 0.0
        return float(min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** (failures.count - 1)))

    def failed(self, host: str, now_ms: int) -> None:
        self.failed_elsewhere(host, now_ms)
        for listener in self.listeners:
            listener(host, now_ms)

    def failed_elsewhere(self, host: str, now_ms: int) -> None:
        """A failure another process saw (not passed on to the listeners)."""
        before = self._hosts.pop(host, None)
        count = 1 if before is None or now_ms - before.last_ms > FORGET_AFTER_MS else \
            before.count + 1
        self._hosts[host] = _Failures(count, now_ms)
        while len(self._hosts) > MAX_TRACKED_HOSTS:
            self._hosts.popitem(last=False)

    def succeeded(self, host: str) -> None:
        self._hosts.pop(host, None)


class HubLogins:
    """The login half of the hub's ``Backend`` (``protocols.ws.backend``), the same wherever
    the hub runs: passwords, session tokens, the throttle and the audit topic's rule."""

    def __init__(self, users: Users, sessions: Sessions, throttle: LoginThrottle) -> None:
        self.users = users
        self.sessions = sessions
        self.throttle = throttle

    def authenticate(self, user: str, password: str) -> str | None:
        return self.users.authenticate(user, password)

    def issue_session(self, user: str, role: str) -> tuple[str, int]:
        return self.sessions.issue(user, cast(Role, role))

    def resume_session(self, token: str) -> Session | None:
        return self.sessions.resume(token)

    def login_delay_s(self, host: str, now_ms: int) -> float:
        return self.throttle.delay_s(host, now_ms)

    def login_failed(self, host: str, now_ms: int) -> None:
        self.throttle.failed(host, now_ms)

    def login_succeeded(self, host: str) -> None:
        self.throttle.succeeded(host)

    def may_follow_audit(self, who: Who) -> bool:
        return may_follow_audit(who.role)


def client_host(address: str) -> str:
    """``"1.2.3.4:5678"`` -> ``"1.2.3.4"``; ``"[::1]:80"`` -> ``"::1"`` (throttling is per host)."""
    host, sep, _ = address.rpartition(":")
    if not sep:
        return address
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
