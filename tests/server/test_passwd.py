"""``wattkeeper passwd`` driven through a terminal, and hashed passwords in ``[[users]]``."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.auth import Users, check_hash, verify_password
from server.config import ConfigError, ParkConfig
from tests.server.parks import park_toml

REPO = Path(__file__).resolve().parents[2]


class Terminal:
    """``wattkeeper passwd`` in a session of its own whose controlling terminal is a pty, as
    when a person runs it: getpass reads /dev/tty with echo off."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "passwd"], cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=slave, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, text=True,
            # The pty becomes the controlling terminal of the new session (opened as /dev/tty).
            preexec_fn=lambda: os.close(os.open(os.ttyname(0), os.O_RDWR)),
        )
        os.close(slave)
        self.screen = ""

    def expect(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not shown; the terminal shows {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode()
                except OSError:  # the process closed the terminal
                    break
        assert text in self.screen, self.screen

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=20)
        os.close(self.master)
        return self.process.returncode, out, err


def run_passwd(first: str, second: str | None) -> tuple[int, str, str, str]:
    terminal = Terminal()
    terminal.expect("New password: ")
    terminal.type(first)
    if second is not None:
        terminal.expect("Same password again: ")
        terminal.type(second)
    code, out, err = terminal.finish()
    return code, out, err, terminal.screen


def test_the_hash_printed_verifies_and_nothing_was_echoed() -> None:
    code, out, err, screen = run_passwd("s3cret-pässword", "s3cret-pässword")
    assert code == 0, err
    match = re.fullmatch(r'password = "(scrypt\$[^"]+)"\n', out)
    assert match is not None, out
    stored = match[1]
    assert check_hash(stored) is None
    assert verify_password(stored, "s3cret-pässword")
    assert not verify_password(stored, "s3cret-password")
    assert "s3cret" not in screen  # not echoed
    assert "[[users]]" in err  # the hint is on stderr, so stdout is just the line


@pytest.mark.parametrize("first, second, words", [
    ("one-password", "another-one",
     "the two passwords differ; nothing was printed, run it again"),
    ("", None, "an empty password is not allowed; nothing was printed"),
])
def test_a_mismatch_or_an_empty_password_is_refused(first: str, second: str | None,
                                                    words: str) -> None:
    code, out, err, _ = run_passwd(first, second)
    assert (code, out) == (1, "")
    assert err.strip() == f"wattkeeper passwd: {words}"


def test_without_a_terminal_end_of_input_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "passwd"], cwd=REPO, input="", text=True,
        capture_output=True, timeout=60, start_new_session=True,  # no controlling terminal
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip().endswith(
        "wattkeeper passwd: no password given (end of input); nothing was printed")


def test_passwd_has_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "passwd", "--help"], cwd=REPO, text=True,
        capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0
    assert "usage: wattkeeper passwd" in result.stdout and "[[users]]" in result.stdout


# --- [[users]] password: plain text or a hash ---------------------------------------------------

HASHED = ("scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA$"
          "yA5mHcQ8jI4bk7Y6X7cWo1f9G6t1s4kFh0n0dKp3Jq8")


def users_toml(password: str, second: str = "op-secret") -> str:
    return park_toml(Path("data")) + f"""
[[users]]
name = "admin"
password = "{password}"
role = "admin"

[[users]]
name = "op"
password = "{second}"
role = "operator"
"""


def test_a_config_may_hold_a_hash_next_to_plain_text() -> None:
    from server.auth import hash_password

    stored = hash_password("admin-secret")
    config = ParkConfig.from_toml_text(users_toml(stored), "park.toml")
    users = Users(config.users)
    assert users.authenticate("admin", "admin-secret") == "admin"
    assert users.authenticate("admin", stored) is None  # the hash is not the password
    assert users.authenticate("op", "op-secret") == "operator"
    assert users.authenticate("op", "wrong") is None


@pytest.mark.parametrize("damaged, words", [
    ("scrypt$16384$8$1$onlysalt", "a password hash has the form scrypt$N$r$p$salt$key"),
    ("scrypt$16384$8$1$c2FsdA$!!notbase64!!", "the password hash is damaged"),
    ("scrypt$1000$8$1$c2FsdHNhbHRzYWx0c2FsdA$" + HASHED.rpartition("$")[2],
     "the password hash's scrypt parameters N=1000 r=8 p=1 are out of range"),
    ("scrypt$16384$8$1$c2FsdA$" + HASHED.rpartition("$")[2],
     "the password hash's salt or key is too short"),
])
def test_a_damaged_hash_is_a_config_error_with_its_key_and_line(damaged: str,
                                                                 words: str) -> None:
    text = users_toml(damaged)
    with pytest.raises(ConfigError) as error:
        ParkConfig.from_toml_text(text, "park.toml")
    (problem,) = error.value.problems
    line = 1 + text.splitlines().index(f'password = "{damaged}"')
    assert str(problem).startswith(f"park.toml:{line}: users[0].password: {words}")


def test_the_park_shares_its_users_with_every_adapter(tmp_path: Path) -> None:
    import trio

    from server.app import open_park

    config = ParkConfig.from_toml_text(
        users_toml("admin-secret").replace('data_dir = "data"',
                                           f'data_dir = "{tmp_path / "park"}"'), "park.toml")

    async def main() -> None:
        async with open_park(config, with_field=False) as park:
            assert len(park.users) == 2
            assert park.users.authenticate("admin", "admin-secret") == "admin"
            assert park.users.role_of("op") == "operator"

    trio.run(main)
