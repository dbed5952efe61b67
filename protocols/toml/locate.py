"""Locating key paths in the TOML source, for problems' line numbers (only when there are
problems: ``tomllib`` reports no positions). Never raises: a path it cannot find falls back
to its nearest enclosing table. The same scanner serves every file we read (park configs,
profiles, scenarios)."""

from __future__ import annotations

import bisect
import contextlib
import re
import tomllib
from collections.abc import Iterator, Mapping

from protocols.toml.values import KeyPath

_WS = re.compile(r"[ \t]*")
_WS_NL_COMMENTS = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STRING = re.compile(r"'[^'\n]*'")
_ML_BASIC = re.compile(r'"""(?:[^\\]|\\.)*?"""{0,2}', re.DOTALL)
_ML_LITERAL = re.compile(r"'''.*?'''{0,2}", re.DOTALL)
_SCALAR = re.compile(r"[^,\]}\n#]*")


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, else of its nearest enclosing table or array element."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def locate_keys(text: str) -> dict[KeyPath, int]:
    """Map key paths to the line (1-based) where each is written; best effort, never raises."""
    scanner = _Scanner(text)
    # A locator bug must never hide the user's real problem: keep what was found so far.
    with contextlib.suppress(Exception):
        scanner.document()
    return scanner.lines


class _Scanner:
    """Just enough of a TOML reader to know where keys are. It runs on text ``tomllib``
    has accepted, so it skips values rather than checking them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._array_counts: dict[KeyPath, int] = {}
        self._last_loop_pos = -1

    def line(self, pos: int | None = None) -> int:
        return bisect.bisect_left(self._newlines, self.pos if pos is None else pos) + 1

    def mark(self, path: KeyPath, pos: int | None = None) -> None:
        self.lines.setdefault(path, self.line(pos))

    def skip(self, pattern: re.Pattern[str]) -> None:
        match = pattern.match(self.text, self.pos)
        if match:
            self.pos = match.end()

    def must_advance(self, pos: int) -> None:
        """Stop a loop that made no progress: a scanner bug must end in a fallback, not a hang."""
        if pos == self._last_loop_pos:
            raise RuntimeError(f"scanner stuck at offset {pos}")
        self._last_loop_pos = pos

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip(_WS_NL_COMMENTS)
            if self.pos >= len(self.text):
                return
            start = self.pos
            self.must_advance(start)
            if self.peek("[["):
                self.pos += 2
                table = self.header(self.key(), array=True, pos=start)
                self.pos = self.text.index("]]", self.pos) + 2
            elif self.peek("["):
                self.pos += 1
                table = self.header(self.key(), array=False, pos=start)
                self.pos = self.text.index("]", self.pos) + 1
            else:
                self.key_value(table)

    def header(self, parts: list[str], *, array: bool, pos: int) -> KeyPath:
        path: KeyPath = ()
        for number, part in enumerate(parts):
            path = (*path, part)
            self.mark(path, pos)
            last = number == len(parts) - 1
            if last and array:
                index = self._array_counts.get(path, 0)
                self._array_counts[path] = index + 1
                path = (*path, index)
                self.mark(path, pos)
            elif path in self._array_counts:
                # [[a]] then [a.b] or [[a.b]]: b belongs to the latest element of a.
                path = (*path, self._array_counts[path] - 1)
        return path

    def key(self) -> list[str]:
        parts = []
        while True:
            self.skip(_WS)
            if self.peek('"'):
                match = _BASIC_STRING.match(self.text, self.pos)
                assert match is not None
                parts.append(tomllib.loads(f"k = {match[0]}")["k"])
            elif self.peek("'"):
                match = _LITERAL_STRING.match(self.text, self.pos)
                assert match is not None
                parts.append(match[0][1:-1])
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                assert match is not None
                parts.append(match[0])
            self.pos = match.end()
            self.skip(_WS)
            if not self.peek("."):
                return parts
            self.pos += 1

    def key_value(self, table: KeyPath) -> None:
        start = self.pos
        path = table
        for part in self.key():
            path = (*path, part)
            self.mark(path, start)
        self.skip(_WS)
        self.pos += 1  # "="
        self.skip(_WS)
        self.value(path)

    def value(self, path: KeyPath) -> None:
        for opener, pattern in (
            ('"""', _ML_BASIC),
            ("'''", _ML_LITERAL),
            ('"', _BASIC_STRING),
            ("'", _LITERAL_STRING),
        ):
            if self.peek(opener):
                match = pattern.match(self.text, self.pos)
                assert match is not None
                self.pos = match.end()
                return
        if self.peek("["):
            self.pos += 1
            for index in _count():
                self.skip(_WS_NL_COMMENTS)
                self.must_advance(self.pos)
                if self.peek("]"):
                    self.pos += 1
                    return
                self.mark((*path, index))
                self.value((*path, index))
                self.skip(_WS_NL_COMMENTS)
                if self.peek(","):
                    self.pos += 1
        elif self.peek("{"):
            self.pos += 1
            while True:
                self.skip(_WS_NL_COMMENTS)
                self.must_advance(self.pos)
                if self.peek("}"):
                    self.pos += 1
                    return
                if self.peek(","):
                    self.pos += 1
                    continue
                self.key_value(path)
        else:
            self.skip(_SCALAR)


def _count() -> Iterator[int]:
    index = 0
    while True:
        yield index
        index += 1
