"""Users, password hashes, session tokens and the login throttle."""

from __future__ import annotations

import attrs
import pytest

from server.auth import (
    MAX_DELAY_S,
    Caller,
    LoginThrottle,
    Sessions,
    Users,
    check_hash,
    client_host,
    hash_password,
    verify_password,
)


@attrs.frozen
class User:
    name: str
    password: str
    role: str


def test_a_hash_verifies_its_password_only() -> None:
    stored = hash_password("op-secret")
    assert stored.startswith("scrypt$16384$8$1$") and check_hash(stored) is None
    assert verify_password(stored, "op-secret")
    assert not verify_password(stored, "op-secreT")
    assert not verify_password(stored, "")
    assert hash_password("op-secret") != stored  # salted


@pytest.mark.parametrize("damaged", ["scrypt$", "scrypt$16384$8$1$abc", "scrypt$x$8$1$AA$AA",
                                     "scrypt$1000$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA"])
def test_a_damaged_hash_is_described_and_never_matches(damaged: str) -> None:
    assert check_hash(damaged) is not None
    assert not verify_password(damaged, "anything")


def test_users_from_plain_text_and_hashes() -> None:
    users = Users([User("op", "op-secret", "operator"),
                   User("root", hash_password("root-pw"), "admin")])
    assert users.authenticate("op", "op-secret") == "operator"
    assert users.authenticate("root", "root-pw") == "admin"
    assert users.authenticate("op", "wrong") is None
    assert users.authenticate("root", "op-secret") is None
    assert users.authenticate("nobody", "op-secret") is None
    assert users.authenticate("op", 42) is None  # type: ignore[arg-type]


def test_sessions_expire_and_can_be_revoked() -> None:
    now = [1_000]
    sessions = Sessions(ttl_ms=60_000, clock_ms=lambda: now[0])
    token, expires = sessions.issue("op", "operator")
    assert expires == 61_000
    assert sessions.resume(token) is not None and sessions.resume(token).role == "operator"
    assert sessions.resume("forged") is None
    now[0] = 61_000
    assert sessions.resume(token) is None
    other, _ = sessions.issue("op", "operator")
    assert sessions.revoke_user("op") == 1 and sessions.resume(other) is None


def test_failed_logins_slow_down_per_host_and_a_success_resets() -> None:
    throttle = LoginThrottle()
    assert throttle.delay_s("10.0.0.1", 0) == 0.0
    delays = []
    for n in range(8):
        throttle.failed("10.0.0.1", n)
        delays.append(throttle.delay_s("10.0.0.1", n))
    assert delays[:3] == [0.25, 0.5, 1.0] and delays[-1] == MAX_DELAY_S
    assert throttle.delay_s("10.0.0.2", 8) == 0.0  # another host is not slowed
    throttle.succeeded("10.0.0.1")
    assert throttle.delay_s("10.0.0.1", 9) == 0.0
    throttle.failed("10.0.0.3", 0)
    assert throttle.delay_s("10.0.0.3", 16 * 60_000) == 0.0  # forgotten after 15 minutes


def test_roles_are_ordered_and_hosts_are_taken_from_addresses() -> None:
    assert Caller("a", "admin", "hub").may("operator")
    assert not Caller("v", "viewer", "hub").may("operator")
    assert client_host("1.2.3.4:5678") == "1.2.3.4"
    assert client_host("[::1]:80") == "::1"
