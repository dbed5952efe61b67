"""Apportionment on a small park computed by hand: a transformer's loss by consumption, street
lighting by floor area, pumps by fixed shares; posted once, explained on the statements, and
the books still balance."""

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
from server.errors import UserError
from server.reports import make_report, render_report
from tests.reports.books_park import at, read

ADMIN = Caller("root", "admin", "http", "10.0.0.1:5000")
OPERATOR = Caller("op", "operator", "http", "10.0.0.7:5000")

METERS = [  # id, tenant, tariff, kWh over the day's ten hours
    ("TX1-MAIN", "park", "utility", 100), ("ACME-1", "acme", "flat", 40),
    ("ACME-2", "acme", "flat", 20), ("BETA-1", "beta", "flat", 20),
    ("LIGHTS", "park", "flat", 4), ("PUMP", "park", "flat", 2),
    ("F2-MAIN", "park", "flat", 10), ("CANTEEN", "canteen", "flat", 10),
]


def park_toml(data_dir: Path) -> str:
    meters = "".join(f"""
[[meters]]
id = "{meter}"
tenant = "{tenant}"
gateway = "gw1"
unit = {unit}
profile = "sdm630"
tariff = "{tariff}"
opening_balance = "500.00"
""" for unit, (meter, tenant, tariff, _) in enumerate(METERS, start=1))
    return f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "1.00"

[tariffs.utility]
kind = "flat"
price = "0.80"

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = 1
{meters}
[tenants.acme]
name = "ACME Tools Ltd"
area_m2 = 1200

[tenants.beta]
area_m2 = 800

[[feeders]]
id = "tx1"
main = "TX1-MAIN"
meters = ["ACME-1", "ACME-2", "BETA-1", "LIGHTS", "PUMP", "F2-MAIN"]
loss_alarm_percent = "5"

[[feeders]]
id = "f2"
main = "F2-MAIN"
meters = ["CANTEEN"]

[[pools]]
id = "tx1-loss"
name = "Transformer loss"
kind = "loss"
feeder = "tx1"

[[pools]]
id = "lighting"
name = "Street lighting"
kind = "common"
meters = ["LIGHTS"]
basis = "area"
tenants = ["acme", "beta"]

[[pools]]
id = "pumps"
kind = "common"
meters = ["PUMP"]
basis = "fixed"
tenants = ["acme", "beta"]
shares = {{ acme = "70", beta = "30" }}
"""


def config_of(data_dir: Path) -> ParkConfig:
    return ParkConfig.from_toml_text(park_toml(data_dir), "apportion.toml")


async def run_the_day(data_dir: Path) -> None:
    async with open_park(config_of(data_dir), with_field=False) as park:
        for meter, _, _, kwh in METERS:
            await read(park, meter, at(0), 1_000_000)
            await read(park, meter, at(10), 1_000_000 + kwh * 1000, kwh * 100.0)


@pytest.fixture
def day_dir(tmp_path: Path) -> Path:
    trio.run(run_the_day, tmp_path / "park")
    return tmp_path / "park"


def report(data_dir: Path, kind: str, **kwargs: str) -> list[dict[str, str]]:
    period = {"first": "2026-11-10", "end": "2026-11-11", **kwargs}
    with open_store_readonly(data_dir) as store:
        text = render_report(make_report(kind, store, config_of(data_dir), **period), "csv")
    return list(csv.DictReader(io.StringIO(text)))


def test_each_pool_and_basis_by_hand(day_dir: Path) -> None:
    # Loss: 100 - (40 + 20 + 20 + 4 + 2 + 10) = 4 kWh (4.00 %) at the transformer's 0.80: 3.20,
    # by consumption in tx1's subtree: ACME 60, Beta 20, the canteen 10 kWh (of 90):
    # 2.13 (2.1333), 0.71 (0.7111), 0.36 (0.3555): the cent left goes to the largest remainder.
    # Lighting 4.00 by area 1200 / 800: 2.40, 1.60. Pumps 2.00 by 70 / 30: 1.40, 0.60.
    rows = report(day_dir, "apportionment")
    shares = {(r["pool"], r["tenant"]): (r["share"], r["share_kwh"], r["posted"]) for r in rows}
    assert shares == {
        ("tx1-loss", "acme"): ("2.13", "2.667", "no"),
        ("tx1-loss", "beta"): ("0.71", "0.889", "no"),
        ("tx1-loss", "canteen"): ("0.36", "0.444", "no"),
        ("lighting", "acme"): ("2.40", "2.400", "no"),
        ("lighting", "beta"): ("1.60", "1.600", "no"),
        ("pumps", "acme"): ("1.40", "1.400", "no"),
        ("pumps", "beta"): ("0.60", "0.600", "no"),
    }
    loss = next(r for r in rows if r["pool"] == "tx1-loss")
    assert (loss["pool_kwh"], loss["pool_cost"]) == ("4.000", "3.20")
    assert "4.00 % of 100.000 kWh" in loss["source"]
    assert next(r for r in rows if r["tenant"] == "acme")["meter"] == "ACME-1"  # main meter


def test_posting_once_and_the_books_still_balance(day_dir: Path) -> None:
    config = config_of(day_dir)

    async def post() -> None:
        async with open_park(config, with_field=False) as park:
            with pytest.raises(Exception, match="admin"):
                await park.operations.apportion(OPERATOR, "2026-11-10", "2026-11-11")
            first = await park.operations.apportion(ADMIN, "2026-11-10", "2026-11-11")
            assert [p["status"] for p in first.postings] == ["applied"] * 7
            acme = park.registry.get("ACME-1").state.balance
            again = await park.operations.apportion(ADMIN, "2026-11-10", "2026-11-11")
            assert [p["status"] for p in again.postings] == ["duplicate"] * 7
            assert park.registry.get("ACME-1").state.balance == acme
            # 500.00 - 40.00 charged - (2.13 + 2.40 + 1.40) apportioned
            assert acme == 500_00 - 40_00 - 5_93

    trio.run(post)
    assert all(r["posted"] == "yes" for r in report(day_dir, "apportionment"))
    balanced = {(r["level"], r["meter"] or r["tenant"]): r for r in report(day_dir,
                                                                          "reconciliation")}
    assert balanced["meter", "ACME-1"]["adjustments"] == "-5.93"
    assert all(r["difference"] == "0.00" for r in balanced.values())
    # Posted now (the server's clock), so on the statement of the period they were posted in.
    lines = [r for r in report(day_dir, "statement", tenant="acme", end="2100-01-01")
             if r["item"] == "apportionment"]
    assert len(lines) == 3 and {r["amount"] for r in lines} == {"-2.13", "-2.40", "-1.40"}
    assert any("Transformer loss 2026-11-10..2026-11-11" in r["detail"]
               and "share 66.67 % by consumption" in r["detail"] for r in lines)


def test_the_black_hole_report_shows_the_loss_hour_by_hour(day_dir: Path) -> None:
    rows = report(day_dir, "blackhole", by="hour")
    tx1 = [r for r in rows if r["feeder"] == "tx1"]
    assert len(tx1) == 10  # 00:00 .. 09:00, the energy spread evenly over the ten hours
    assert {(r["main_kwh"], r["sub_kwh"], r["loss_kwh"]) for r in tx1} == {
        ("10.000", "9.600", "0.400")}
    assert all(r["over_threshold"] == "false" for r in tx1)  # 4 % < 5 %
    f2 = [r for r in rows if r["feeder"] == "f2"]
    assert {r["loss_kwh"] for r in f2} == {"0.000"}
    with pytest.raises(UserError, match="--by"):
        report(day_dir, "blackhole", by="minute")
