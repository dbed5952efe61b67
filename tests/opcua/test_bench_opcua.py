"""``wattkeeper bench opcua`` runs end to end at a toy size and prints the issue's figures."""

from __future__ import annotations

from tests.bench.test_smoke import run_bench


def test_bench_opcua_prints_every_figure_of_its_issue() -> None:
    result = run_bench("opcua", "--", "--meters", "400", "--seconds", "1.5", "--watch", "50",
                       "--baseline-sample", "20")
    assert result["meters"] == 400
    for key in ("build_s", "baseline_build_s", "updates_per_s", "p99_subscription_ms",
                "control_p99_decision_ms_with_opcua", "control_p99_decision_ms_without_opcua",
                "rss_mb_per_1000_meters"):
        assert result[key] > 0, key
    assert result["notifications"] > 0
