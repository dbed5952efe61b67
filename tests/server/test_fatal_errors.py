"""``serve`` and ``demo`` end every fatal error with one line on stderr, details in the log.

Real processes, as a terminal runs them: a data directory that is a file, a port that is taken,
and a bug injected into a background task (``tests/server/buggy_serve.py``). Each must exit 1
with ``wattkeeper CMD: stopped: <reason> (details in <log file>)`` as the last line, no
traceback or exception group anywhere on the terminal, and the traceback in the log file.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from server.logs import ConsoleFormatter, close_log_file, open_log_file
from tests.server.parks import park_toml
from tests.simulators.test_simulate_command import free_port

REPO = Path(__file__).resolve().parents[2]
TRACEBACK_SIGNS = ("Traceback", "ExceptionGroup", "+-+-", 'File "')


def run(tmp_path: Path, *argv: str, module: str = "server.cli") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", module, *argv], cwd=tmp_path, env=env, text=True,
        capture_output=True, timeout=60,
    )


def assert_one_line_ending(result: subprocess.CompletedProcess[str], command: str) -> tuple[
    str, Path
]:
    """The last stderr line is the goodbye; returns its reason and the log file it names."""
    terminal = result.stdout + result.stderr
    assert result.returncode == 1, terminal
    for sign in TRACEBACK_SIGNS:
        assert sign not in terminal, terminal
    last = result.stderr.rstrip("\n").splitlines()[-1]
    match = re.fullmatch(rf"wattkeeper {command}: stopped: (.+) \(details in (.+)\)", last)
    assert match is not None, last
    log_file = Path(match[2])
    assert log_file.is_file()
    return match[1], log_file


def test_serve_with_a_data_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory\n")
    (tmp_path / "park.toml").write_text(park_toml(Path("data"), 1, gateway_port=free_port()))
    result = run(tmp_path, "serve", "--config", "park.toml")
    reason, log_file = assert_one_line_ending(result, "serve")
    assert reason == f"cannot create the data directory {tmp_path / 'data'}: File exists"
    # The data directory cannot hold the log: it went to the temporary directory.
    assert log_file.parent == tmp_path / "tmp" and log_file.name.startswith("wattkeeper-")
    assert "StoreError" in log_file.read_text()


def test_demo_on_a_port_that_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(tmp_path, "demo", "--meters", "2", "--gateways", "1", "--port", str(port),
                     "--data", "demo", "--seconds", "5")
    reason, log_file = assert_one_line_ending(result, "demo")
    assert reason == (f"gateway gw1: port {port} on 127.0.0.1 is already in use (choose another "
                      "--port, or stop what is using it)")
    assert log_file == tmp_path / "demo" / "wattkeeper.log"


def test_serve_with_a_bug_in_a_background_task(tmp_path: Path) -> None:
    (tmp_path / "park.toml").write_text(park_toml(Path("data"), 1, gateway_port=free_port()))
    result = run(tmp_path, "serve", "--config", "park.toml", module="tests.server.buggy_serve")
    reason, log_file = assert_one_line_ending(result, "serve")
    assert reason == (
        "an internal error (RuntimeError: injected bug); this is a bug, please report it"
    )
    assert log_file == tmp_path / "data" / "wattkeeper.log"
    log = log_file.read_text()
    # The whole story is in the log: start, the traceback through the nurseries, the goodbye.
    assert "polling 1 meters behind 1 gateways" in log
    assert "CRITICAL wattkeeper.fatal: stopped: an internal error" in log
    assert "Traceback" in log and 'raise RuntimeError("injected bug")' in log
    # The console got the same INFO lines, each on one line.
    assert "polling 1 meters behind 1 gateways" in result.stderr


def test_serve_still_prints_config_errors_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "park.toml").write_text(park_toml(Path("data"), 1, gateway_port=0))
    result = run(tmp_path, "serve", "--config", "park.toml")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "wattkeeper serve: park.toml:23: gateways[0].port: must be between 1 and 65535, got 0"
    ]
    assert not (tmp_path / "data").exists()  # nothing started, nothing logged


def test_the_console_shows_a_logged_traceback_as_one_line(tmp_path: Path) -> None:
    log_file = open_log_file(tmp_path)
    try:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            record = logging.getLogger("t").makeRecord(
                "t", logging.ERROR, __file__, 1, "meter %s crashed", ("M-1",), sys.exc_info()
            )
        line = ConsoleFormatter("%(levelname)s %(message)s").format(record)
        assert line == f"ERROR meter M-1 crashed (traceback in {log_file})"
        assert record.exc_info is not None  # left for the file handler, which prints it
        assert "ValueError: bad" in logging.Formatter().format(record)
    finally:
        close_log_file()


def test_without_a_log_file_the_console_keeps_the_traceback() -> None:
    """``sim`` and ``bench`` have no log file: a traceback must not vanish."""
    close_log_file()
    try:
        raise ValueError("bad value")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "it broke", (), sys.exc_info()
        )
    text = ConsoleFormatter("%(message)s").format(record)
    assert text.startswith("it broke\nTraceback") and "ValueError: bad value" in text
