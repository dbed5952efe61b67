"""Energy per unit of output on a small park computed by hand: counts entered per line and
day (a correction replaces the first), kWh per unit, its change and its average."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import trio

from persistence.readonly import open_store_readonly
from server.app import open_park
from server.auth import Caller
from server.config import ParkConfig
from server.ledger import BadRequest
from server.operations import Forbidden
from server.reports import make_report, render_report
from tests.reports.books_park import at, books_toml, read

OPERATOR = Caller("op", "operator", "http", "10.0.0.7:5000")
VIEWER = Caller("eve", "viewer", "http", "10.0.0.8:5000")
LINES = """
[[lines]]
id = "press"
name = "Press line"
meters = ["M-A1", "M-A2"]
output_unit = "parts"
"""


def config_of(data_dir: Path) -> ParkConfig:
    return ParkConfig.from_toml_text(books_toml(data_dir) + LINES, "output.toml")


async def run_three_days(data_dir: Path) -> None:
    """M-A1 uses 10, 12 and 9 kWh on 2026-11-10, 11 and 12 (readings at 01:00 and 07:00
    local = UTC, the valley band); M-A2 2 kWh on the 11th. Counts: 100 parts on the 10th,
    a count of 130 on the 11th corrected to 140, none on the 12th."""
    async with open_park(config_of(data_dir), with_field=False) as park:
        registers = {"M-A1": 100_000, "M-A2": 50_000}
        for day, used in enumerate(({"M-A1": 10_000}, {"M-A1": 12_000, "M-A2": 2_000},
                                    {"M-A1": 9_000})):
            for meter in registers:
                await read(park, meter, at(1, day=day), registers[meter])
                registers[meter] += used.get(meter, 0)
                await read(park, meter, at(7, day=day), registers[meter])
        ops = park.operations
        first = await ops.record_output(OPERATOR, "press", "2026-11-10", 100, "c1")
        assert (first.status, first.count, first.unit) == ("applied", 100, "parts")
        assert (await ops.record_output(OPERATOR, "press", "2026-11-10", 100, "c1")
                ).status == "duplicate"
        await ops.record_output(OPERATOR, "press", "2026-11-11", 130, "c2")
        await ops.record_output(OPERATOR, "press", "2026-11-11", 140, "c3")  # corrected
        with pytest.raises(Forbidden):
            await ops.record_output(VIEWER, "press", "2026-11-12", 1, "c4")
        for line, day, count, words in (("nope", "2026-11-12", 1, "unknown production line"),
                                        ("press", "11/12/2026", 1, "local day"),
                                        ("press", "2999-01-01", 1, "not happened"),
                                        ("press", "2026-11-12", -1, "whole number")):
            with pytest.raises(BadRequest, match=words):
                await ops.record_output(OPERATOR, line, day, count, f"bad-{words}")


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    trio.run(run_three_days, tmp_path / "park")
    return tmp_path / "park"


def test_kwh_per_unit_its_change_and_its_average(output_dir: Path) -> None:
    with open_store_readonly(output_dir) as store:
        text = render_report(make_report("output", store, config_of(output_dir),
                                         first="2026-11-10", end="2026-11-13"), "csv")
    rows = {row["date"]: row for row in csv.DictReader(io.StringIO(text))}
    assert (rows["2026-11-10"]["kwh"], rows["2026-11-10"]["units"],
            rows["2026-11-10"]["kwh_per_unit"]) == ("10.000", "100", "0.1")
    eleventh = rows["2026-11-11"]  # 14 kWh / 140 parts: the same 0.1, no change
    assert (eleventh["kwh"], eleventh["units"], eleventh["kwh_per_unit"],
            eleventh["change_percent"], eleventh["avg7_kwh_per_unit"]) == (
        "14.000", "140", "0.1", "0.0", "0.1")
    twelfth = rows["2026-11-12"]  # energy, but no count: no ratio
    assert (twelfth["kwh"], twelfth["units"], twelfth["kwh_per_unit"]) == ("9.000", "", "")
    total = rows["total"]  # 33 kWh over 240 parts
    assert (total["kwh"], total["units"], total["kwh_per_unit"]) == ("33.000", "240", "0.1375")
