"""Where the long-running commands log: one-line messages on the console, details in a file.

Theory of operation
-------------------
``wattkeeper serve`` and ``wattkeeper demo`` run unattended for months, and what an operator
sees on the terminal (or in ``journalctl``) must be lines they can act on, never an exception
group. So logging has two destinations:

* the **console** (stderr), at ``--log-level`` (INFO by default), one line per record: a
  record that carries a traceback is printed without it, ending ``(traceback in LOG)`` (the
  short-lived commands, which have no log file, print tracebacks as before);
* the **log file**, ``wattkeeper.log`` in the data directory (``server.data_dir`` for
  ``serve``; the ``--data`` directory for ``demo``), the same records *with* their tracebacks,
  rotated at 10 MiB with five old files kept (``wattkeeper.log.1`` ... ``.5``). If the data
  directory cannot hold it (it is a file, or read-only), the file goes to the temporary
  directory instead (``/tmp/wattkeeper-USER.log``), so a traceback is never lost.

A fatal error ends the command with one line on stderr naming the reason and the log file
(``server.cli``); its traceback is written to the file only, through :func:`log_fatal`.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import logging.handlers
import tempfile
from pathlib import Path
from typing import Final

__all__ = [
    "LOG_FILE_NAME",
    "ConsoleFormatter",
    "close_log_file",
    "configure_console",
    "current_log_file",
    "log_fatal",
    "open_log_file",
]

LOG_FILE_NAME: Final = "wattkeeper.log"
MAX_LOG_BYTES: Final = 10 << 20
KEPT_LOG_FILES: Final = 5
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_FATAL: Final = logging.getLogger("wattkeeper.fatal")
"""Only the log file hears it: the console gets the command's own one-line goodbye instead."""
_FATAL.propagate = False

_console_handler: logging.Handler | None = None
_file_handler: logging.Handler | None = None
_file_path: Path | None = None


class ConsoleFormatter(logging.Formatter):
    """One line per record: tracebacks and stacks are left to the log file. A command that
    has no log file (``sim``, ``bench``) keeps them on the console: there is nowhere else."""

    def format(self, record: logging.LogRecord) -> str:
        if _file_path is None:
            return super().format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        had_details = bool(record.exc_info or record.exc_text or record.stack_info)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        line = line.replace("\n", " | ")  # a message with newlines stays one line
        if had_details:
            line += f" (traceback in {_file_path})"
        return line


def configure_console(level: str) -> None:
    """The console handler for every command (stderr, one line per record); replaces the one
    an earlier call installed (tests run many commands in one process)."""
    global _console_handler
    root = logging.getLogger()
    if _console_handler is not None:
        root.removeHandler(_console_handler)
    _console_handler = logging.StreamHandler()
    _console_handler.setFormatter(ConsoleFormatter(FORMAT))
    root.addHandler(_console_handler)
    root.setLevel(level.upper())


def open_log_file(directory: Path) -> Path | None:
    """Log to ``directory / wattkeeper.log`` from now on (module docstring); returns the file
    actually used (None if not even the temporary directory would take one)."""
    global _file_handler, _file_path
    handler: logging.Handler | None = None
    path = Path(directory).resolve() / LOG_FILE_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _rotating(path)
    except OSError:
        path = Path(tempfile.gettempdir()) / f"wattkeeper-{_user()}.log"
        with contextlib.suppress(OSError):
            handler = _rotating(path)
    close_log_file()
    _file_handler, _file_path = handler, path if handler is not None else None
    if handler is not None:
        logging.getLogger().addHandler(handler)
        _FATAL.addHandler(handler)
    return _file_path


def close_log_file() -> None:
    """Stop logging to the file (the command is over)."""
    global _file_handler, _file_path
    if _file_handler is not None:
        logging.getLogger().removeHandler(_file_handler)
        _FATAL.removeHandler(_file_handler)
        _file_handler.close()
    _file_handler, _file_path = None, None


def current_log_file() -> Path | None:
    """The file :func:`open_log_file` opened, or None (a command that does not log to one)."""
    return _file_path


def log_fatal(reason: str, error: BaseException) -> None:
    """The fatal error with its whole traceback, in the log file only."""
    _FATAL.critical("stopped: %s", reason, exc_info=error)


def _rotating(path: Path) -> logging.Handler:
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=MAX_LOG_BYTES, backupCount=KEPT_LOG_FILES, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with an arbitrary uid)
        return "unknown"
