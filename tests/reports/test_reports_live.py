"""Reports while the server runs: ``GET /api/reports/KIND`` from the server's own store, and
``wattkeeper report`` from another process as an LMDB reader, next to the running park."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import trio

from server.app import open_park
from server.config import ListenAddress, ParkConfig
from server.web import run_web
from tests.http.harness import USERS_TOML
from tests.reports.books_park import OPERATOR, at, books_toml, read

REPO = Path(__file__).resolve().parents[2]


async def test_reports_over_http_and_from_another_process_while_the_park_runs(
        tmp_path: Path) -> None:
    data = tmp_path / "park"
    text = books_toml(data) + USERS_TOML
    config_file = tmp_path / "park.toml"
    config_file.write_text(text)
    config = ParkConfig.from_toml_text(text, str(config_file))
    async with open_park(config, with_field=False) as park, trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: run_web(
            park, listen=ListenAddress("127.0.0.1", 0), task_status=task_status))
        await read(park, "M-B1", at(19, 0), 500_000)
        await read(park, "M-B1", at(19, 30), 502_000)
        await park.operations.top_up(OPERATOR, "M-B1", 10_00, "live-1")
        await park.snapshot_now()
        await trio.sleep(1.2)  # the history flusher's second
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            answer = await client.get("/api/reports/reconciliation?format=json",
                                      auth=("op", "op-secret"))
            assert answer.status_code == 200, answer.text
            park_row = answer.json()["totals"]
            assert (park_row["balance"], park_row["difference"]) == ("132.60", "0.00")
            csv_answer = await client.get("/api/reports/consumption?from=2026-11-10"
                                          "&to=2026-11-11&by=tenant", auth=("op", "op-secret"))
            assert csv_answer.headers["content-type"].startswith("text/csv")
            assert "beta,2.000,2.40" in csv_answer.text
            refused = await client.get("/api/reports/arrears", auth=("viewer", "viewer-secret"))
            assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
            unknown = await client.get("/api/reports/nope", auth=("op", "op-secret"))
            assert unknown.status_code == 404
            tenants = (await client.get("/api/tenants", auth=("viewer", "viewer-secret"))).json()
            assert [(t["tenant"], t["meters"], t["main_meter"], t["balance"])
                    for t in tenants["tenants"]] == [
                ("acme", ["M-A1", "M-A2"], "M-A1", "120.00"),
                ("beta", ["M-B1"], "M-B1", "12.60")]
            missing = await client.get("/api/tenants/nobody", auth=("op", "op-secret"))
            assert (missing.status_code, missing.json()["error"]) == (404, "unknown_tenant")
            history = (await client.get("/api/meters/M-B1/history?from=2026-11-10&to=2026-11-11",
                                        auth=("viewer", "viewer-secret"))).json()
            # 19:00-19:30, 2 kWh peak at 1.20: two intervals, the register and the balance at
            # each one's end (opening 5.00, before the top-up).
            assert [(i["start"], i["kwh"], i["cost"], i["band"], i["register_kwh"],
                     i["balance"]) for i in history["intervals"]] == [
                ("2026-11-10T19:00:00.000Z", 1.0, "1.20", "peak", 501.0, "3.80"),
                ("2026-11-10T19:15:00.000Z", 1.0, "1.20", "peak", 502.0, "2.60")]
            assert history["interval_s"] == 900
            bad = await client.get("/api/reports/topups?from=yesterday",
                                   auth=("op", "op-secret"))
            assert (bad.status_code, bad.json()["error"]) == (400, "bad_request")
            assert "--from must be a date" in bad.json()["message"]
        # Another process, while the server holds the directory: an LMDB reader.
        done = await trio.run_process(
            [sys.executable, "-m", "server.cli", "report", "reconciliation", "--config",
             str(config_file), "--format", "json"], capture_stdout=True, capture_stderr=True,
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout)["totals"]["balance"] == "132.60"
        nursery.cancel_scope.cancel()
