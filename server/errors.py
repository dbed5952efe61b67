"""Errors the command line shows in words, shared by every command module.

``UserError`` is raised by the commands (``server.simulate``, ``server.demo``, the CLI) for
anything the user can fix; ``server.cli`` prints it as one line, without a traceback. It lives
here rather than in ``server.cli`` so that a command module does not import the entry point
that imports it.
"""

from __future__ import annotations

__all__ = ["UserError", "interrupted_only"]


class UserError(Exception):
    """An error that is the user's to fix; printed without a traceback."""


def interrupted_only(error: BaseException) -> bool:
    """Ctrl-C, possibly wrapped in trio's nursery exception groups (one per nursery level)."""
    if isinstance(error, BaseExceptionGroup):
        return all(interrupted_only(inner) for inner in error.exceptions)
    return isinstance(error, KeyboardInterrupt)
