"""How every benchmark ends: its verdicts on stderr, then its figures on stdout.

With ``--json`` the last line of stdout is one JSON object (what scripts and the smoke tests
read); without it, one ``figure: value`` line per figure, for people.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank below); NaN of nothing."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def progress(message: str) -> None:
    """Phase progress on stderr (the JSON line on stdout stays the last line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def print_result(result: Mapping[str, Any], *, as_json: bool, verdicts: Iterable[str] = ()) -> None:
    for line in verdicts:
        print(line, file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(result))
        return
    width = max((len(key) for key in result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")
