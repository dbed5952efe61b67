"""``wattkeeper bench console`` runs end to end at a toy size and prints the issue's figures."""

from __future__ import annotations

import math

from tests.bench.test_smoke import run_bench


def test_bench_console_prints_every_figure_of_its_issue() -> None:
    result = run_bench("console", "--", "--meters", "200", "--seconds", "3", "--logins", "1")
    assert result["meters"] == 200
    for key in ("first_table_ms", "all_meters_ms", "p99_update_visible_ms",
                "p50_update_visible_ms", "p99_update_arrival_ms", "js_heap_mb",
                "js_heap_mb_after_gc"):
        assert isinstance(result[key], int | float) and math.isfinite(result[key]), key
        assert result[key] > 0, key
    assert result["updates"] >= 10 and result["updates_missed"] == 0
    assert result["meters_in_view"] > 10  # a full first screen of rows at 1280x800
