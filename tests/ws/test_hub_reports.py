"""Reports over the hub (the console's reports page asks this way): the same bytes as
``wattkeeper report``, the same roles and errors, across the hub's process boundary."""

from __future__ import annotations

import json
from pathlib import Path

from server.auth import SYSTEM
from server.reports import make_report, render_report
from tests.ws.client import connect_and_login
from tests.ws.parks import hub_park, open_hub


async def test_a_report_over_the_hub_is_the_command_lines_report(tmp_path: Path) -> None:
    config = hub_park(tmp_path / "park")
    async with open_hub(config) as (park, services):
        await park.operations.top_up(SYSTEM, "M-2", 12_34, "hub-report-1")
        await park.snapshot_now()
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        answer, _ = await client.ask({"type": "report", "id": "r1", "kind": "reconciliation",
                                      "format": "json"})
        assert (answer["type"], answer["format"]) == ("report", "json"), answer
        totals = json.loads(answer["body"])["totals"]
        assert (totals["topups"], totals["difference"]) == ("12.34", "0.00")
        csv_answer, _ = await client.ask({"type": "report", "id": "r2", "kind": "topups",
                                          "from": "2000-01-01", "to": "2100-01-01"})
        expected = render_report(make_report("topups", park.store, config, first="2000-01-01",
                                             end="2100-01-01"), "csv")
        assert (csv_answer["format"], csv_answer["body"]) == ("csv", expected)
        page, _ = await client.ask({"type": "report", "id": "r3", "kind": "statement",
                                    "tenant": "beta", "format": "html"})
        assert page["format"] == "html" and "<h1>Statement: beta</h1>" in page["body"]

        for bad, code, words in [
            ({"kind": "nope"}, "bad_request", "no report 'nope'"),
            ({"kind": "topups", "from": "yesterday"}, "bad_request", "--from must be a date"),
            ({"kind": "statement"}, "bad_request", "needs --tenant"),
            ({"kind": "whatif"}, "bad_request", "needs --tariff"),
            ({"kind": 7}, "bad_request", "kind"),
        ]:
            error, _ = await client.ask({"type": "report", "id": "bad", **bad})
            assert (error["type"], error["code"]) == ("error", code), (bad, error)
            assert words in error["message"], (bad, error)
        viewer = await connect_and_login(services.hub_url, "eve", "eve-secret")
        refused, _ = await viewer.ask({"type": "report", "id": "v1", "kind": "arrears"})
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
