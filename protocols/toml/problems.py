"""What is wrong with a TOML file, and where: :class:`Problem` (one, located),
:class:`Problems` (collected while reading, located at the end) and :class:`DocumentError`
(a file that cannot be used: the park config's, a profile's and a scenario's errors are one)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from protocols.toml.locate import line_of, locate_keys
from protocols.toml.values import KeyPath, format_path


@attrs.frozen
class Problem:
    """One thing wrong with a file, located for the user: ``file:line: key.path: message``.
    ``line`` is None when it is not known; ``source`` is empty when it is not about a file."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return ": ".join(part for part in (where, self.path, self.message) if part)


class DocumentError(ValueError):
    """A file that cannot be used; ``str()`` is every problem, one per line, in file order.

    A plain message is one problem without a place (for errors that are not about a key)."""

    def __init__(self, problems: Sequence[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", None, "", problems)]
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class Problems:
    """Problems found so far, each at a key path; the same problem at the same path is kept
    once (a bad ``meter_defaults`` value is read by every meter but is one mistake)."""

    def __init__(self) -> None:
        self.items: list[tuple[KeyPath, str, KeyPath | None]] = []
        self._seen: set[tuple[KeyPath, str]] = set()

    def add(self, path: KeyPath, message: str, *, related: KeyPath | None = None) -> None:
        if (path, message) not in self._seen:
            self._seen.add((path, message))
            self.items.append((path, message, related))

    def located(self, text: str | None, source: str) -> list[Problem]:
        """Every problem with its line in ``text`` (the file's source; without it, no lines)."""
        lines = locate_keys(text) if text is not None else {}
        problems = []
        for path, message, related in self.items:
            if related is not None:
                related_line = line_of(lines, related)
                where = f"line {related_line}" if related_line else format_path(related)
                message = f"{message} (first at {where})"
            problems.append(Problem(source, line_of(lines, path), format_path(path), message))
        # File order reads best; problems without a line go last.
        problems.sort(key=lambda p: p.line if p.line is not None else 1 << 62)
        return problems
