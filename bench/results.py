"""How every benchmark ends: its verdicts on stderr, then its figures on stdout.

With ``--json`` the last line of stdout is one JSON object (what scripts and the smoke tests
read); without it, one ``figure: value`` line per figure, for people.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any


def print_result(result: Mapping[str, Any], *, as_json: bool, verdicts: Iterable[str] = ()) -> None:
    for line in verdicts:
        print(line, file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(result))
        return
    width = max((len(key) for key in result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")
