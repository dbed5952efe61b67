"""Parsing TOML that users write (configs, profiles, scenarios) without a traceback.

Theory of operation
-------------------
``tomllib`` parses arrays and inline tables recursively: a value nested a few hundred levels
deep (``x = [[[[...]]]]``) ends in ``RecursionError``, a traceback instead of a config error.
No file we read needs more than three levels (``bands = [{ ... }]`` is two), so
:func:`parse_toml` refuses anything nested deeper than :data:`MAX_NESTING` with
:class:`TomlNestingError`, which carries the line where the limit is crossed.

Finding the depth must not cost the happy path much: a 100k-meter park is ~10 MB of TOML that
``tomllib`` takes seconds to parse. So a regular expression first looks for a *run* of
``MAX_NESTING + 1`` openers (``[`` or ``{``) with no bracket between them (one C-level pass,
~0.1 s on 10 MB); only if there is one does the exact scanner (which skips strings and
comments, where brackets mean nothing) walk the text to find the line. A document whose strings
hide closing brackets between its openers (``[ "]", [ "]", ...``) escapes the quick check;
if it is deep enough to matter, ``tomllib`` raises ``RecursionError``, which is caught and
located by the same exact scanner.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from typing import Any, Final

__all__ = ["MAX_NESTING", "TomlNestingError", "nesting_line", "parse_toml"]

MAX_NESTING: Final = 32
"""Arrays and inline tables inside each other, at most (a park config needs two)."""

_OPENER_RUN: Final = re.compile(r"(?:[\[{][^\[\]{}]*+){" + str(MAX_NESTING + 1) + "}")
_TOKEN: Final = re.compile(
    r'"""(?:[^\\]|\\.)*?"""{0,2}'  # multi-line basic string
    r"|'''.*?'''{0,2}"  # multi-line literal string
    r'|"(?:[^"\\\n]|\\.)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
    r"|[\[\]{}]",
    re.DOTALL,
)


class TomlNestingError(ValueError):
    """A document nested deeper than :data:`MAX_NESTING`; ``line`` is where (1-based)."""

    def __init__(self, line: int | None) -> None:
        self.line = line
        super().__init__(
            f"arrays or inline tables nested more than {MAX_NESTING} levels deep "
            "(a park config or profile needs at most three)"
        )


def nesting_line(text: str, limit: int = MAX_NESTING) -> int | None:
    """The line where brackets outside strings and comments first nest deeper than ``limit``,
    or None. Table headers (``[a]``, ``[[a]]``) open and close at once, so they count only
    as what they are: one or two levels for a moment."""
    depth = 0
    for token in _TOKEN.finditer(text):
        char = token[0]
        if char in "[{":
            depth += 1
            if depth > limit:
                return bisect.bisect_right(_newlines(text), token.start()) + 1
        elif char in "]}":
            depth = max(depth - 1, 0)  # unbalanced text is tomllib's to report
    return None


def _newlines(text: str) -> list[int]:
    return [match.start() for match in re.finditer("\n", text)]


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` with the nesting limit; raises ``tomllib.TOMLDecodeError`` as it does,
    and :class:`TomlNestingError` for a document nested too deep."""
    if _OPENER_RUN.search(text) is not None:
        line = nesting_line(text)
        if line is not None:
            raise TomlNestingError(line)
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise TomlNestingError(nesting_line(text)) from None
