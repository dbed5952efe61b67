"""``wattkeeper bench hub`` runs end to end at a toy size and prints the issue's figures."""

from __future__ import annotations

from tests.bench.test_smoke import run_bench


def test_bench_hub_prints_every_figure_of_its_issue() -> None:
    result = run_bench("hub", "--", "--meters", "400", "--clients", "6", "--all-clients", "1",
                       "--seconds", "1.5", "--stall-seconds", "0.5")
    assert (result["clients"], result["meters"]) == (6, 400)
    for key in ("deltas_offered_per_s", "deltas_delivered_per_s", "p99_delivery_ms",
                "control_p99_decision_ms_with_clients",
                "control_p99_decision_ms_without_clients"):
        assert result[key] > 0, key
    assert "bytes_per_client" in result and "stalled_client_effect_ms" in result
    assert result["clients_closed_early"] == 0
