"""The insights report on a small park computed by hand.

The park (``insights_toml``): Asia/Shanghai (UTC+8), a time-of-use tariff valley 00-08 0.30,
flat 08-18 0.60, peak 18-24 1.00 per kWh, and one local day, Tuesday 2026-11-10, written to a
real data directory through the journal's writer (history intervals and their day records).

* acme (sector machining, 100 m2): M-A1 with 1-hour intervals: hours 0-4 2000, 1000, 1500,
  1500, 3000 Wh; 5-7 3000 each; 8-17 10000 each except hour 9, 12000; 18-23 6000 each
  (156 kWh). M-A2 with 15-minute intervals: 250 Wh each of its 96 (24 kWh, 1 kW all day).
  Its slot is the lcm of 1 h and 15 min, 1 h; its hours: 0: 3000, 1: 2000, 2: 2500, 3: 2500,
  4: 4000, 5-7: 4000, 8: 11000, 9: 13000, 10-17: 11000, 18-23: 7000 Wh (180 kWh).
* beta (sector machining, 50 m2): M-B1, 1 h: 5000 Wh each hour 0-17, 2000 each hour 18-23
  (102 kWh).
* gamma (no sector, no area): M-C1, 1 h: 0 Wh in hours 0-7, 4000 in 8-17, 0 in 18-21, and no
  interval at all for hours 22 and 23 (the meter was offline): 40 kWh over 22 slots.

Left out of every figure: M-B1's 99 kWh in the first hour of the next day (outside the
period), acme's water meter W-A1 (9 m3 at 19:00) and the park's common-area meter LIGHTS (a
pool's, 50 kWh every hour).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import trio

from persistence.codec import HistoryItem
from persistence.journal import open_journal
from persistence.readonly import open_store_readonly
from persistence.store import open_store
from policies.insights import fixed
from server.cli import main as cli_main
from server.config import ParkConfig
from server.errors import UserError
from server.reports import make_report, render_report, tenant_insights
from server.reports.insights import insight_cells
from tests.http.harness import USERS_TOML
from tests.ws.client import connect_and_login
from tests.ws.parks import open_hub

ZONE = ZoneInfo("Asia/Shanghai")
HOUR = 3_600_000
QUARTER = 900_000
DAY = dt.date(2026, 11, 10)
PRICES = {"valley": 30, "flat": 60, "peak": 100}  # minor units per kWh


def midnight() -> int:
    return int(dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=ZONE).timestamp() * 1000)


def band_of(hour: int) -> str:
    return "valley" if hour < 8 else "flat" if hour < 18 else "peak"


def insights_toml(data_dir: Path) -> str:
    meters = "".join(f"""
[[meters]]
id = "{meter}"
tenant = "{tenant}"
gateway = "gw1"
unit = {unit}
profile = "sdm630"
relay_coil = 0
tariff = "tou"
interval = "{interval}"
opening_balance = "100.00"
""" for unit, (meter, tenant, interval) in enumerate(
        [("M-A1", "acme", "1h"), ("M-A2", "acme", "15m"), ("M-B1", "beta", "1h"),
         ("M-C1", "gamma", "1h")], start=1))
    return f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[calendar]
timezone = "Asia/Shanghai"

[tariffs.tou]
kind = "tou"
bands = [
  {{ name = "valley", start = "00:00", end = "08:00", price = "0.30" }},
  {{ name = "flat",   start = "08:00", end = "18:00", price = "0.60" }},
  {{ name = "peak",   start = "18:00", end = "24:00", price = "1.00" }},
]

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = 1
{meters}
[tariffs.water]
kind = "tiered"
tiers = [{{ up_to_m3 = "10", price = "3.00" }}, {{ price = "4.50" }}]

[[meters]]
id = "W-A1"
tenant = "acme"
gateway = "gw1"
unit = 5
profile = "water"
tariff = "water"
opening_balance = "100.00"

[[meters]]
id = "LIGHTS"
tenant = "park"
gateway = "gw1"
unit = 6
profile = "sdm630"
relay_coil = 0
tariff = "tou"
interval = "1h"
opening_balance = "100.00"

[[pools]]
id = "lights"
kind = "common"
meters = ["LIGHTS"]

[tenants.acme]
sector = "machining"
area_m2 = 100

[tenants.beta]
sector = "machining"
area_m2 = 50
"""


def hourly(meter: str, whs: dict[int, int]) -> list[HistoryItem]:
    base = midnight()
    return [(meter, base + hour * HOUR, wh, wh * PRICES[band_of(hour)] // 1000, band_of(hour),
             -1, 0) for hour, wh in whs.items()]


def a1_hours() -> dict[int, int]:
    night = [2000, 1000, 1500, 1500, 3000]
    return {hour: night[hour] if hour < 5 else 3000 if hour < 8 else
            (12000 if hour == 9 else 10000) if hour < 18 else 6000 for hour in range(24)}


def history() -> list[HistoryItem]:
    base = midnight()
    quarters: list[HistoryItem] = [
        ("M-A2", base + k * QUARTER, 250, 250 * PRICES[band_of(k // 4)] // 1000,
         band_of(k // 4), -1, 0) for k in range(96)]
    return [*hourly("M-A1", a1_hours()), *quarters,
            *hourly("M-B1", {hour: 5000 if hour < 18 else 2000 for hour in range(24)}),
            *hourly("M-C1", {hour: 4000 if 8 <= hour < 18 else 0 for hour in range(22)}),
            # Outside the report: the next day, acme's water (litres, not Wh) and the park's
            # common-area lighting.
            *hourly("M-B1", {24: 99_000}),
            ("W-A1", base + 19 * HOUR, 9_000, 2_700, "tiered", -1, 0),
            *hourly("LIGHTS", {hour: 50_000 for hour in range(24)})]


def write_park(data_dir: Path) -> ParkConfig:
    config = ParkConfig.from_toml_text(insights_toml(data_dir), "insights.toml")

    async def write() -> None:
        with open_store(config.server.data_dir) as store:
            async with open_journal(store, days_zone="Asia/Shanghai") as journal:
                journal.put_history_nowait(history())
                await journal.flush()

    trio.run(write)
    return config


@pytest.fixture(scope="module")
def park(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ParkConfig]:
    data_dir = tmp_path_factory.mktemp("insights") / "park"
    return data_dir, write_park(data_dir)


def report(park: tuple[Path, ParkConfig], form: str = "csv", **kwargs: str) -> str:
    data_dir, config = park
    with open_store_readonly(data_dir) as store:
        return render_report(make_report("insights", store, config, first="2026-11-10",
                                         end="2026-11-11", **kwargs), form)


def rows(text: str) -> dict[str, dict[str, str]]:
    return {row["tenant"]: row for row in csv.DictReader(io.StringIO(text))}


def test_acme_by_hand(park: tuple[Path, ParkConfig]) -> None:
    acme = rows(report(park))["acme"]
    # 180 kWh: valley 18 (M-A1 hours 0-7) + 8 (M-A2: 32 quarters of 250 Wh) = 26; flat 102 +
    # 10 (40 quarters) = 112; peak 36 + 6 (24 quarters) = 42. Shares 14.444.., 62.222..,
    # 23.333.. %: to one decimal 14.4 + 62.2 + 23.3 = 99.9, and the unit left goes to the
    # largest remainder (valley's .444), so they add up to 100.0.
    assert (acme["sector"], acme["meters"], acme["kwh"]) == ("machining", "2", "180.000")
    assert (acme["pct_peak"], acme["pct_flat"], acme["pct_valley"]) == ("23.3", "62.2", "14.5")
    # The highest hour is 9:00, 12000 + 1000 Wh in one hour: 13 kW. The average is 180 kWh
    # over 24 h, 7.5 kW; the load factor 7.5 / 13 = 0.5769...
    assert (acme["peak_kw"], acme["peak_at"]) == ("13.000", "2026-11-10T09:00+08:00")
    assert (acme["average_kw"], acme["load_factor"]) == ("7.500", "0.577")
    # Night slots 00:00-04:00: 3000, 2000, 2500, 2500, 4000 Wh; the median 2500 Wh in an hour
    # is 2.5 kW, a third of the average power.
    assert (acme["night_base_kw"], acme["night_base_pct"]) == ("2.500", "33.3")
    assert (acme["area_m2"], acme["kwh_per_m2"]) == ("100", "1.800")  # 180 kWh / 100 m2
    # 10 % of 42 kWh of peak is 4.2 kWh, moved from 1.00 to 0.30: 4.2 * 0.70 = 2.94.
    assert (acme["shift_pct"], acme["shift_kwh"], acme["saving"]) == ("10.00", "4.200", "2.94")
    # Its peers: the machining sector less itself, beta alone (below).
    assert (acme["compared_with"], acme["peers"]) == ("sector:machining", "1")
    assert (acme["peers_pct_peak"], acme["peers_load_factor"], acme["peers_night_base_pct"],
            acme["peers_kwh_per_m2"]) == ("11.8", "0.850", "117.6", "2.040")


def test_beta_by_hand(park: tuple[Path, ParkConfig]) -> None:
    beta = rows(report(park))["beta"]
    # 102 kWh: valley 8 h x 5 = 40, flat 10 h x 5 = 50, peak 6 h x 2 = 12. Shares 39.2156..,
    # 49.0196.., 11.7647..: 39.2 + 49.0 + 11.7 = 99.9, peak's .647 is the largest remainder.
    assert (beta["kwh"], beta["pct_valley"], beta["pct_flat"], beta["pct_peak"]) == (
        "102.000", "39.2", "49.0", "11.8")
    # Peak 5 kW from the first hour on (the earliest is named); average 102 / 24 = 4.25 kW;
    # load factor 4.25 / 5 = 0.85. A night shift: the night base 5 kW is 5 / 4.25 = 117.6 % of
    # the average power.
    assert (beta["peak_kw"], beta["peak_at"]) == ("5.000", "2026-11-10T00:00+08:00")
    assert (beta["average_kw"], beta["load_factor"]) == ("4.250", "0.850")
    assert (beta["night_base_kw"], beta["night_base_pct"]) == ("5.000", "117.6")
    assert beta["kwh_per_m2"] == "2.040"  # 102 kWh / 50 m2
    assert (beta["shift_kwh"], beta["saving"]) == ("1.200", "0.84")  # 1.2 kWh x 0.70
    # acme's figures: 23.333.. % peak, 0.5769.., a night base of 33.33.. %, 1.8 kWh/m2.
    assert (beta["compared_with"], beta["peers"], beta["peers_pct_peak"],
            beta["peers_load_factor"], beta["peers_night_base_pct"],
            beta["peers_kwh_per_m2"]) == ("sector:machining", "1", "23.3", "0.577", "33.3",
                                          "1.800")


def test_gamma_without_a_sector_compares_with_the_whole_park(
        park: tuple[Path, ParkConfig]) -> None:
    gamma = rows(report(park))["gamma"]
    # 40 kWh, all flat; 22 slots with an interval (hours 22-23 are missing, not zero), so the
    # average is 40 / 22 = 1.8181.. kW and the load factor 40 / (22 x 4) = 0.4545...
    assert (gamma["sector"], gamma["kwh"], gamma["pct_peak"], gamma["pct_flat"],
            gamma["pct_valley"]) == ("", "40.000", "0.0", "100.0", "0.0")
    assert (gamma["peak_kw"], gamma["peak_at"]) == ("4.000", "2026-11-10T08:00+08:00")
    assert (gamma["average_kw"], gamma["load_factor"]) == ("1.818", "0.455")
    assert (gamma["night_base_kw"], gamma["night_base_pct"]) == ("0.000", "0.0")
    assert (gamma["area_m2"], gamma["kwh_per_m2"]) == ("", "")  # no area: no kWh per m2
    assert (gamma["shift_kwh"], gamma["saving"]) == ("0.000", "0.00")  # nothing in the peak
    # The park's other two, acme and beta: the median of two is their mean. Peak share
    # (7/30 + 2/17) / 2 = 179/1020 = 17.549 %; load factor (15/26 + 17/20) / 2 = 371/520 =
    # 0.71346; night base (1/3 + 20/17) / 2 = 77/102 = 75.49 %; kWh/m2 (1.8 + 2.04) / 2.
    assert (gamma["compared_with"], gamma["peers"], gamma["peers_pct_peak"],
            gamma["peers_load_factor"], gamma["peers_night_base_pct"],
            gamma["peers_kwh_per_m2"]) == ("park", "2", "17.5", "0.713", "75.5", "1.920")


def test_the_park_total(park: tuple[Path, ParkConfig]) -> None:
    total = rows(report(park))["total"]
    # 322 kWh: peak 42 + 12 = 54 (16.770 %), flat 112 + 50 + 40 = 202 (62.733 %), valley
    # 26 + 40 = 66 (20.497 %); 16.7 + 62.7 + 20.4 = 99.8, and the two units left go to
    # valley (.969) and peak (.702).
    assert (total["meters"], total["kwh"]) == ("4", "322.000")
    assert (total["pct_peak"], total["pct_flat"], total["pct_valley"]) == ("16.8", "62.7", "20.5")
    # The park's hours: 0: 8000, 1: 7000, 2: 7500, 3: 7500, 4: 9000, ... 9: 13000 + 5000 +
    # 4000 = 22000 (the peak, 22 kW); average 322 / 24 = 13.4166.. kW, load factor 0.6098...
    # Night median 7500 Wh: 7.5 kW, 7.5 / 13.4166.. = 55.9 % of the average.
    assert (total["peak_kw"], total["peak_at"]) == ("22.000", "2026-11-10T09:00+08:00")
    assert (total["average_kw"], total["load_factor"]) == ("13.417", "0.610")
    assert (total["night_base_kw"], total["night_base_pct"]) == ("7.500", "55.9")
    # The saving is the tenants' savings summed: 2.94 + 0.84 + 0.00.
    assert (total["shift_kwh"], total["saving"]) == ("5.400", "3.78")
    assert (total["sector"], total["compared_with"], total["peers"]) == ("", "", "")


def test_a_shift_of_twelve_and_a_half_percent_rounds_down(
        park: tuple[Path, ParkConfig]) -> None:
    lines = rows(report(park, shift="12.5"))
    # acme: 12.5 % of 42 kWh = 5.25 kWh x 0.70 = 3.675, rounded down to 3.67; beta: 1.5 kWh x
    # 0.70 = 1.05; the total 3.67 + 1.05 + 0.00 = 4.72.
    assert (lines["acme"]["shift_pct"], lines["acme"]["shift_kwh"], lines["acme"]["saving"]) \
        == ("12.50", "5.250", "3.67")
    assert lines["beta"]["saving"] == "1.05"
    assert lines["total"]["saving"] == "4.72"
    assert rows(report(park, shift="0"))["total"]["saving"] == "0.00"
    for bad in ("101", "-1", "ten", "1.005"):
        with pytest.raises(UserError, match="shift"):
            report(park, shift=bad)


def test_json_has_the_same_figures_and_the_notes(park: tuple[Path, ParkConfig]) -> None:
    body = json.loads(report(park, "json"))
    assert body["report"] == "insights"
    assert body["columns"][:7] == ["tenant", "sector", "meters", "kwh", "pct_peak", "pct_flat",
                                   "pct_valley"]
    assert [row["tenant"] for row in body["rows"]] == ["acme", "beta", "gamma"]
    gamma = body["rows"][2]
    assert (gamma["area_m2"], gamma["kwh_per_m2"], gamma["peers"]) == (None, None, 2)
    assert body["totals"]["saving"] == "3.78"
    assert any("10.00 % of each tenant's peak energy" in note for note in body["notes"])
    assert "electricity of tenants' meters only: water meters and the park's own meters " \
           "(LIGHTS) left out" in body["notes"]


def test_tenant_insights_for_the_phone_page(park: tuple[Path, ParkConfig]) -> None:
    data_dir, config = park
    with open_store_readonly(data_dir) as store:
        acme = tenant_insights(store, config, "acme", "2026-11-10", "2026-11-11", 10)
        gamma = tenant_insights(store, config, "gamma", "2026-11-10", "2026-11-11", "12.5")
        with pytest.raises(UserError, match="no tenant 'nobody'"):
            tenant_insights(store, config, "nobody", "2026-11-10", "2026-11-11")
    figures = acme.figures
    assert acme.period == ("2026-11-10", "2026-11-11")
    assert (figures.wh, figures.peak_w, figures.average_w) == (180_000, 13_000, 7_500)
    assert [(b.band, b.wh) for b in figures.bands] == [("peak", 42_000), ("flat", 112_000),
                                                       ("valley", 26_000)]
    assert sum(b.share for b in figures.bands) == 1
    assert figures.load_factor == Fraction(15, 26)  # 7500 / 13000
    assert (figures.night_base_w, figures.shift.minor, figures.shift.moved_wh) == (
        2_500, 294, 4_200)
    assert (acme.comparison.sector, acme.comparison.peers) == ("machining", 1)
    assert acme.comparison.load_factor == Fraction(17, 20)  # beta's 4250 / 5000
    # gamma compares with both others; its shift moves nothing (no peak energy).
    assert (gamma.comparison.sector, gamma.comparison.peers) == ("", 2)
    assert fixed(gamma.comparison.load_factor or 0, 5) == "0.71346"  # 371/520
    assert (gamma.figures.shift.percent_bp, gamma.figures.shift.minor) == (12_50, 0)
    # Printed as the report prints it.
    cells = insight_cells(acme.figures, acme.comparison, config)
    assert (cells["pct_peak"], cells["load_factor"], cells["saving"], cells["compared_with"],
            cells["peers_load_factor"]) == ("23.3", "0.577", "2.94", "sector:machining",
                                            "0.850")


def test_the_command_line_prints_the_same_report(
        park: tuple[Path, ParkConfig], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, _ = park
    config_file = tmp_path / "insights.toml"
    config_file.write_text(insights_toml(data_dir))
    assert cli_main(["report", "insights", "--config", str(config_file), "--from",
                     "2026-11-10", "--to", "2026-11-11", "--shift", "12.5"]) == 0
    assert capsys.readouterr().out == report(park, shift="12.5")


async def test_over_the_hub_and_http_with_the_shift(tmp_path: Path) -> None:
    data_dir = tmp_path / "park"
    await trio.to_thread.run_sync(write_park, data_dir)
    hub = '\n[hub]\nlisten = "127.0.0.1:18765"\n'  # (open_hub listens on a free port)
    config = ParkConfig.from_toml_text(insights_toml(data_dir) + hub + USERS_TOML,
                                       "insights.toml")
    async with open_hub(config) as (park, services):
        expected = render_report(make_report("insights", park.store, config, first="2026-11-10",
                                             end="2026-11-11", shift="12.5"), "csv")
        assert "acme,machining,2,180.000," in expected
        client = await connect_and_login(services.hub_url, "op", "op-secret")
        answer, _ = await client.ask({"type": "report", "id": "i1", "kind": "insights",
                                      "from": "2026-11-10", "to": "2026-11-11",
                                      "shift": "12.5"})
        assert (answer["type"], answer["body"]) == ("report", expected), answer
        refused, _ = await client.ask({"type": "report", "id": "i2", "kind": "insights",
                                       "shift": "150"})
        assert (refused["code"], "--shift must be from 0 to 100" in refused["message"]) == (
            "bad_request", True), refused
        async with httpx.AsyncClient(base_url=services.http_url, timeout=20) as web:
            over_http = await web.get("/api/reports/insights?from=2026-11-10&to=2026-11-11"
                                      "&shift=12.5", auth=("op", "op-secret"))
            assert (over_http.status_code, over_http.text) == (200, expected)
            bad = await web.get("/api/reports/insights?shift=x", auth=("op", "op-secret"))
            assert (bad.status_code, bad.json()["error"]) == (400, "bad_request")
            viewer = await web.get("/api/reports/insights", auth=("viewer", "viewer-secret"))
            assert viewer.status_code == 403


def test_a_period_without_history_has_no_figures_to_divide(
        park: tuple[Path, ParkConfig]) -> None:
    data_dir, config = park
    with open_store_readonly(data_dir) as store:
        text = render_report(make_report("insights", store, config, first="2026-11-20",
                                         end="2026-11-21"), "csv")
    lines = rows(text)
    assert list(lines) == ["acme", "beta", "gamma", "total"]
    for row in lines.values():
        assert (row["kwh"], row["pct_peak"], row["peak_kw"], row["load_factor"],
                row["night_base_kw"], row["saving"]) == ("0.000", "", "", "", "", "0.00"), row
    # Nobody has a figure, so no peer has one either.
    assert (lines["acme"]["peers"], lines["acme"]["peers_load_factor"]) == ("1", "")
    assert lines["acme"]["kwh_per_m2"] == "0.000"  # it has an area: 0 kWh over 100 m2
