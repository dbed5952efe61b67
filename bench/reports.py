"""``wattkeeper bench reports``: the reports over a month of 15-minute history.

A park of ``--meters`` meters (default 10,000; five per tenant, on a time-of-use tariff)
gets ``--days`` days (default 30) of 15-minute intervals written through the real history
writer (``Journal.put_history_nowait``, the path the meters' closed intervals take), and
snapshots that agree with them. Then, in this process, from the data directory:

* ``reconciliation_s``: ``wattkeeper report reconciliation``;
* ``statement_all_tenants_s``: every tenant's statement for the month;
* ``whatif_s``: the month under a flat tariff, per tenant;
* ``apportionment_s``: the month's apportionment (``wattkeeper report apportionment``) over
  ``POOLS`` feeders, each a main meter over ``meters / POOLS`` tenants' meters with a loss pool
  shared by consumption; the main meters' history is their meters' plus 4 %, so every pool
  has a loss to share;
* ``baseline_reconciliation_s``: the same sums by reading every interval record one by one
  in its own read transaction, decoding each (what a reader without paging would do);
* ``peak_rss_mb``: this process's peak anonymous resident memory over the reports (sampled
  every 20 ms): what the reports cost. ``peak_rss_with_mapped_file_mb`` is the kernel's peak
  resident size, which also counts the pages of the LMDB file mapped while reading it (with
  fault-around, the neighbours of every page read, mostly interval pages): page cache that
  any reader of the file maps, not memory the reports hold;
* ``intervals``: history records written; ``build_s``: how long the writer took.

The reports read the day records (``persistence.days``); the baseline reads the intervals.
The data directory is deleted at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

from bench.load import rss_anon
from bench.results import print_result, progress
from persistence.codec import HistoryItem, decode_interval, encode_state
from persistence.journal import open_journal
from persistence.keys import meter_key
from persistence.readonly import open_store_readonly
from persistence.store import open_store
from policies.records import MeterState
from server.config import ParkConfig
from server.reports import make_report
from server.reports.books import read_books
from server.reports.period import parse_period
from server.reports.statement import statements

INTERVAL_MS = 900_000
PER_TENANT = 5
POOLS = 50
LOSS_PERCENT = 4
START = dt.date(2026, 10, 1)


def feeder_of(number: int, meters: int) -> int:
    """Which of the ``POOLS`` feeders (fewer for fewer meters) tenant meter ``number`` hangs
    under."""
    return number * min(POOLS, meters) // meters


def bench_toml(data_dir: Path, meters: int) -> str:
    tables = "".join(f"""
[[meters]]
id = "M-{n:05d}"
tenant = "T-{n // PER_TENANT:04d}"
gateway = "gw{n // 200}"
unit = {n % 200 + 1}
""" for n in range(meters))
    pools = min(POOLS, meters)
    tables += "".join(f"""
[[meters]]
id = "F-{f:02d}"
tenant = "park"
gateway = "gw-feeders"
unit = {f + 1}
""" for f in range(pools))
    under: dict[int, list[str]] = {}
    for n in range(meters):
        under.setdefault(feeder_of(n, meters), []).append(f'"M-{n:05d}"')
    tables += "".join(f"""
[[feeders]]
id = "tx{f:02d}"
main = "F-{f:02d}"
meters = [{", ".join(under[f])}]

[[pools]]
id = "loss-{f:02d}"
kind = "loss"
feeder = "tx{f:02d}"
""" for f in range(pools))
    gateways_extra = '\n[[gateways]]\nid = "gw-feeders"\nhost = "127.0.0.1"\nport = 19999\n'

    gateways = "".join(f'\n[[gateways]]\nid = "gw{g}"\nhost = "127.0.0.1"\nport = {20000 + g}\n'
                       for g in range(-(-meters // 200))) + gateways_extra
    return f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"

[tariffs.flat]
kind = "flat"
price = "1.00"

[tariffs.tou]
kind = "tou"
bands = [
  {{ name = "valley", start = "00:00", end = "08:00", price = "0.40" }},
  {{ name = "flat",   start = "08:00", end = "18:00", price = "0.80" }},
  {{ name = "peak",   start = "18:00", end = "24:00", price = "1.20" }},
]

[meter_defaults]
profile = "sdm630"
relay_coil = 0
tariff = "tou"
opening_balance = "1000000.00"
{gateways}
{tables}
"""


def band_of(start_ms: int) -> tuple[str, int]:
    """(band, price in minor units per kWh) of an interval starting then (UTC park)."""
    hour = start_ms // 3_600_000 % 24
    return ("valley", 40) if hour < 8 else ("flat", 80) if hour < 18 else ("peak", 120)


async def build(config: ParkConfig, days: int) -> tuple[int, float]:
    """Write the month's history and matching snapshots through the journal's writer."""
    first = int(dt.datetime(START.year, START.month, START.day, tzinfo=dt.UTC).timestamp()
                * 1000)
    slots = days * 86_400_000 // INTERVAL_MS
    began = time.perf_counter()
    written = 0
    tenant_meters = sum(1 for meter in config.meters if meter.tenant != "park")
    # What each feeder's meters draw per slot: its main meter shows that plus its loss.
    under = [[0] * slots for _ in config.feeders]
    with open_store(config.server.data_dir) as store:
        async with open_journal(store, days_zone=config.calendar.timezone) as journal:
            snapshots = []
            for number, meter in enumerate(config.meters):
                items: list[HistoryItem] = []
                register, charged = 1_000_000, 0
                feeder = (feeder_of(number, tenant_meters) if number < tenant_meters
                          else number - tenant_meters)
                for slot in range(slots):
                    start = first + slot * INTERVAL_MS
                    if number < tenant_meters:
                        wh = 50 + (number * 7 + slot * 13) % 400
                        under[feeder][slot] += wh
                    else:  # a feeder's main meter, written after every meter under it
                        wh = under[feeder][slot] * (100 + LOSS_PERCENT) // 100
                    band, price = band_of(start)
                    minor = wh * price // 1000
                    register += wh
                    charged += minor
                    items.append((meter.id, start, wh, minor, band, register,
                                  meter.opening_balance - charged))
                journal.put_history_nowait(items)
                written += len(items)
                end = first + slots * INTERVAL_MS
                state = MeterState(meter.opening_balance - charged, register_wh=register,
                                   reading_ms=end, reading_mono_ms=end, bucket_start_ms=end)
                snapshots.append((meter.id, encode_state(state)))
                if number % 200 == 199:
                    await journal.flush()
                    progress(f"{number + 1} meters written")
            journal.put_snapshots_nowait(snapshots)
            await journal.flush()
    return written, time.perf_counter() - began


def baseline_reconciliation(config: ParkConfig) -> float:
    """Every interval record read and decoded one by one (one read transaction each)."""
    began = time.perf_counter()
    with open_store_readonly(config.server.data_dir) as store:
        books = read_books(store, config)
        total = 0
        first = int(dt.datetime(START.year, START.month, START.day, tzinfo=dt.UTC)
                    .timestamp() * 1000)
        for meter_id, state in books.snapshots.items():
            start = first
            while start < state.bucket_start_ms:
                with store.read() as txn:
                    value = txn.get(meter_key(meter_id, start), db=store.history)
                if value is not None:
                    total += decode_interval(value)[1]
                start += INTERVAL_MS
    return time.perf_counter() - began


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakAnon:
    """The highest anonymous resident size of this process while running (a thread)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakAnon:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._measure()

    def _measure(self) -> None:
        self.peak = max(self.peak, rss_anon([os.getpid()]))

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._measure()


def timed(what: str, run: Any) -> float:
    began = time.perf_counter()
    run()
    taken = time.perf_counter() - began
    progress(f"{what}: {taken:.1f} s (peak RSS so far {peak_rss_mb():.0f} MB)")
    return taken


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wattkeeper bench reports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.meters < PER_TENANT or args.days < 1:
        parser.error(f"need --meters >= {PER_TENANT} and --days >= 1")
    workdir = Path(tempfile.mkdtemp(prefix="wattkeeper-bench-reports-"))
    config = ParkConfig.from_toml_text(bench_toml(workdir / "lmdb", args.meters),
                                       "bench-reports.toml")
    progress(f"writing {args.days} days of history for {args.meters} meters")
    intervals, build_s = trio.run(build, config, args.days)
    progress(f"built in {build_s:.0f} s (peak RSS so far {peak_rss_mb():.0f} MB)")
    end = (START + dt.timedelta(days=args.days)).isoformat()
    with PeakAnon() as anon, open_store_readonly(config.server.data_dir) as store:
        reconciliation_s = timed("reconciliation", lambda: make_report(
            "reconciliation", store, config))
        period = parse_period(START.isoformat(), end, "UTC", START)
        statement_s = timed("statements of every tenant", lambda: statements(
            read_books(store, config), period, "UTC"))
        whatif_s = timed("what-if", lambda: make_report(
            "whatif", store, config, first=START.isoformat(), end=end, tariff="flat"))
        shared: list[int] = []
        apportionment_s = timed("apportionment", lambda: shared.append(len(make_report(
            "apportionment", store, config, first=START.isoformat(), end=end).rows)))
    reports_rss_mb = peak_rss_mb()  # (the reports', before the baseline reads every interval)
    baseline_s = timed("baseline reconciliation", lambda: baseline_reconciliation(config))
    shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "meters": args.meters, "days": args.days, "intervals": intervals,
        "build_s": round(build_s, 1),
        "statement_all_tenants_s": round(statement_s, 4),
        "reconciliation_s": round(reconciliation_s, 4),
        "whatif_s": round(whatif_s, 4),
        "apportionment_s": round(apportionment_s, 4),
        "apportionment_pools": len(config.pools), "apportionment_shares": shared[0],
        "baseline_reconciliation_s": round(baseline_s, 4),
        "peak_rss_mb": round(anon.peak / (1 << 20), 1),
        "peak_rss_with_mapped_file_mb": round(reports_rss_mb, 1),
    }
    verdicts = [
        f"statement_all_tenants_s {results['statement_all_tenants_s']} (target <= 10)",
        f"reconciliation_s {results['reconciliation_s']} (target <= 5)",
        f"whatif_s {results['whatif_s']} (target <= 10)",
        f"apportionment_s {results['apportionment_s']} (target <= 5)",
        f"peak_rss_mb {results['peak_rss_mb']} (target <= 1000)",
    ]
    print_result(results, as_json=args.json, verdicts=verdicts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
