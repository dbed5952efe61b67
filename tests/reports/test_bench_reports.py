"""``wattkeeper bench reports`` runs end to end at a toy size and prints the issue's figures."""

from __future__ import annotations

from tests.bench.test_smoke import run_bench


def test_bench_reports_prints_every_figure_of_its_issue() -> None:
    result = run_bench("reports", "--", "--meters", "20", "--days", "2")
    # 20 tenant meters and, for 20 pools, 20 feeders' main meters.
    assert (result["meters"], result["intervals"]) == (20, 40 * 2 * 96)
    for key in ("statement_all_tenants_s", "reconciliation_s", "whatif_s", "apportionment_s",
                "baseline_reconciliation_s", "peak_rss_mb"):
        assert isinstance(result[key], float) and result[key] >= 0, key
    assert result["peak_rss_mb"] > 0
    # A feeder over each tenant meter: one share per pool, every pool with a loss to share.
    assert (result["apportionment_pools"], result["apportionment_shares"]) == (20, 20)
