"""Errors the command line shows in words, shared by every command module.

``UserError`` is raised by the commands (``server.simulate``, ``server.demo``, the CLI) for
anything the user can fix; ``server.cli`` prints it as one line, without a traceback. It lives
here rather than in ``server.cli`` so that a command module does not import the entry point
that imports it.

:func:`user_message` is the one place that decides which exceptions are the user's to fix (a
bad config, a data directory in use, a port taken, a disk error) and words them;
:func:`fatal_reason` words any other error that stops a long-running command, as one line that
says it is a bug and where the details are. Both look through trio's nested exception groups.
"""

from __future__ import annotations

__all__ = ["UserError", "fatal_reason", "interrupted_only", "leaves", "user_message"]

MAX_REASON_CHARS = 300


class UserError(Exception):
    """An error that is the user's to fix; printed without a traceback."""


def interrupted_only(error: BaseException) -> bool:
    """Ctrl-C, possibly wrapped in trio's nursery exception groups (one per nursery level)."""
    if isinstance(error, BaseExceptionGroup):
        return all(interrupted_only(inner) for inner in error.exceptions)
    return isinstance(error, KeyboardInterrupt)


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside nested groups (or the error itself), in order."""
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    found: list[BaseException] = []
    for inner in error.exceptions:
        found.extend(leaves(inner))
    return found


def user_message(error: BaseException) -> str | None:
    """The words for errors a user can act on; None means a bug (a traceback is wanted)."""
    from persistence.store import StoreError
    from protocols.modbus.profiles import ProfileError
    from server.config import ConfigError

    if isinstance(error, BaseExceptionGroup):
        # trio nurseries wrap errors in groups; a user error inside one is still the user's.
        # Ctrl-C next to the real error is the shutdown it caused, not news.
        found = [leaf for leaf in leaves(error) if not isinstance(leaf, KeyboardInterrupt)]
        messages = [user_message(leaf) for leaf in found]
        if not messages or None in messages:
            return None
        return "; ".join(dict.fromkeys(m for m in messages if m is not None))
    # A profile error names the profile and what is wrong with it (or which ones exist).
    if isinstance(error, ConfigError | StoreError | UserError | ProfileError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror}: {error.filename}"
    if isinstance(error, OSError):
        return str(error)
    return None


def fatal_reason(error: BaseException) -> str:
    """One line saying why a long-running command stopped (module docstring)."""
    message = user_message(error)
    if message is None:
        bugs = [
            leaf for leaf in leaves(error)
            if not isinstance(leaf, KeyboardInterrupt) and user_message(leaf) is None
        ] or [error]
        first = bugs[0]
        text = str(first).strip().splitlines()
        detail = f"{type(first).__name__}: {text[0]}" if text else type(first).__name__
        more = f" and {len(bugs) - 1} more" if len(bugs) > 1 else ""
        message = f"an internal error ({detail}){more}; this is a bug, please report it"
    message = " | ".join(line for line in message.splitlines() if line.strip())
    if len(message) > MAX_REASON_CHARS:
        message = message[: MAX_REASON_CHARS - 3] + "..."
    return message
