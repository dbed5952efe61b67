"""Reports of a park with water and gas meters beside the electricity ones (books by hand).

The park of books_park.py plus a water meter of acme's on a tiered m3 tariff (10 m3 at 3.00,
then 4.50) and a gas meter of beta's at a flat 3.20 per m3. Their registers count litres, so
their volume must never be added into kWh: consumption and what-if cover one meter kind at a
time (electricity by default, columns unchanged), and a statement names its m3 lines.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import trio

from persistence.readonly import open_store_readonly
from server.app import open_park
from server.cli import main as cli_main
from server.config import ParkConfig
from server.errors import UserError
from server.reports import make_report, render_report, statement_page
from tests.reports.books_park import at, books_toml, read

WATER_AND_GAS = """
[tariffs.water]
kind = "tiered"
tiers = [{ up_to_m3 = "10", price = "3.00" }, { price = "4.50" }]

[tariffs.gas]
kind = "flat"
unit = "m3"
price = "3.20"

[[meters]]
id = "W-1"
tenant = "acme"
gateway = "gw1"
unit = 4
profile = "water"
tariff = "water"
opening_balance = "100.00"

[[meters]]
id = "G-1"
tenant = "beta"
gateway = "gw1"
unit = 5
profile = "gas"
tariff = "gas"
opening_balance = "100.00"
"""


def config_of(data_dir: Path) -> ParkConfig:
    return ParkConfig.from_toml_text(books_toml(data_dir) + WATER_AND_GAS, "books.toml")


async def run_the_day(data_dir: Path) -> None:
    """M-A1: 1 kWh in the valley (0.40). W-1: 12 m3 over two hours, 10 at 3.00 and 2 at 4.50
    (39.00). G-1: 1.5 m3 in an hour at 3.20 (4.80)."""
    async with open_park(config_of(data_dir), with_field=False) as park:
        await read(park, "M-A1", at(6), 10_000)
        await read(park, "M-A1", at(7), 11_000)
        await read(park, "W-1", at(9), 1_234_000, 6_000.0)
        await read(park, "W-1", at(11), 1_246_000, 6_000.0)
        await read(park, "G-1", at(19), 50_000, 1_500.0)
        await read(park, "G-1", at(20), 51_500, 1_500.0)
        await trio.sleep(0)


@pytest.fixture
def day_dir(tmp_path: Path) -> Path:
    trio.run(run_the_day, tmp_path / "park")
    return tmp_path / "park"


def report(data_dir: Path, kind: str, form: str = "csv", **kwargs: str) -> str:
    with open_store_readonly(data_dir) as store:
        return render_report(make_report(kind, store, config_of(data_dir), first="2026-11-10",
                                         end="2026-11-11", **kwargs), form)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_consumption_is_electricity_in_kwh_by_default(day_dir: Path) -> None:
    text = report(day_dir, "consumption")
    assert text.splitlines()[0] == "meter,kwh,cost,kwh_valley,cost_valley"  # as before
    assert [(r["meter"], r["kwh"], r["cost"]) for r in rows(text)] == [
        ("M-A1", "1.000", "0.40"), ("M-A2", "0.000", "0.00"), ("M-B1", "0.000", "0.00"),
        ("total", "1.000", "0.40")]  # no litres counted as Wh
    notes = json.loads(report(day_dir, "consumption", "json"))["notes"]
    assert notes == ["electricity meters only; the park's gas and water meters are in the "
                     "same report with meter_kind=gas"]


def test_water_and_gas_consumption_in_m3(day_dir: Path) -> None:
    water = report(day_dir, "consumption", meter_kind="water")
    assert rows(water) == [
        {"meter": "W-1", "m3": "12.000", "cost": "39.00", "m3_tiered": "12.000",
         "cost_tiered": "39.00"},
        {"meter": "total", "m3": "12.000", "cost": "39.00", "m3_tiered": "12.000",
         "cost_tiered": "39.00"}]
    gas = rows(report(day_dir, "consumption", meter_kind="gas", by="tenant"))
    assert [(r["tenant"], r["m3"], r["cost"], r["m3_flat"]) for r in gas] == [
        ("beta", "1.500", "4.80", "1.500"), ("total", "1.500", "4.80", "1.500")]
    title = json.loads(report(day_dir, "consumption", "json", meter_kind="gas"))["title"]
    assert title == "Gas consumption (m3) and cost by meter and tariff band"
    with pytest.raises(UserError, match="meter_kind must be one of electricity, water, gas"):
        report(day_dir, "consumption", meter_kind="steam")


def test_whatif_prices_one_meter_kind_with_a_tariff_of_its_unit(day_dir: Path) -> None:
    # The water meter's 12 m3 at the gas price: 38.40 instead of 39.00.
    water = rows(report(day_dir, "whatif", tariff="gas", meter_kind="water"))
    assert water[0] == {"tenant": "acme", "meters": "1", "m3": "12.000", "charged": "39.00",
                        "whatif": "38.40", "difference": "-0.60"}
    with pytest.raises(UserError, match="tariff 'water' is priced per m3, and electricity "
                                        "meters are charged per kWh"):
        report(day_dir, "whatif", tariff="water")
    electricity = rows(report(day_dir, "whatif", tariff="flat"))
    assert electricity[-1]["kwh"] == "1.000"


def test_a_statement_names_its_m3_lines(day_dir: Path) -> None:
    lines = rows(report(day_dir, "statement", tenant="acme"))
    charges = [(r["meter"], r["detail"], r["kwh"], r["amount"]) for r in lines
               if r["item"] == "charge"]
    assert charges == [("M-A1", "valley", "1.000", "-0.40"),
                       ("W-1", "tiered (m3)", "12.000", "-39.00")]
    with open_store_readonly(day_dir) as store:
        page = statement_page(store, config_of(day_dir), "acme", first="2026-11-10",
                              end="2026-11-11")
    assert "<td>tiered (m3)</td><td class=n>12.000</td>" in page
    # The books still balance, every meter kind together (money is money).
    assert "M-A1" in report(day_dir, "reconciliation")


def test_the_command_takes_a_meter_kind(day_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "park.toml"
    path.write_text(books_toml(day_dir) + WATER_AND_GAS)
    assert cli_main(["report", "consumption", "--config", str(path), "--from", "2026-11-10",
                     "--to", "2026-11-11", "--meter-kind", "water"]) == 0
    assert capsys.readouterr().out == report(day_dir, "consumption", meter_kind="water")
