"""``wattkeeper bench console``: the browser console in headless Chromium against a live park.

A park of ``--meters`` meters (default 10,000; no field: every meter gets a reading once a
second through the registry, as in ``bench hub``), with its stream, hub and HTTP side, runs
in ``trio.run`` on a thread of its own; Debian's Chromium (``/usr/bin/chromium``, never a
downloaded one) is driven from the main thread through playwright's sync API, which keeps an
asyncio loop there. Both read the same wall clock, which is how a change in the server and
its appearance in the page are put side by side.

Phases:

1. ``first table``, ``--logins`` times (default 3), each in a fresh browser context (no
   session): open ``/#/meters``, sign in as the viewer ``bench``, wait until every row that
   fits in the table's viewport (1280x800) shows a meter with its balance.
2. ``live``, ``--seconds`` long (default 60), one context signed in on the meter table:
   readings keep flowing to every meter at 1 Hz and the bench tops up the meters whose rows
   are on screen, round robin, ``--changes-per-s`` times a second (default 5), each by
   500.00 (so the new value is unmistakable whatever the readings charge meanwhile).

Figures (the last line with ``--json`` is one JSON object):

* ``first_table_ms``: the login form submitted -> the last of the first screen's rows filled
  (measured in the page with ``performance.now()``; a MutationObserver on the table notices
  the moment), median of the logins; ``first_table_ms_runs`` lists them all.
  ``all_meters_ms``: the same start -> the store holds every meter of the snapshot.
* ``p99_update_visible_ms``: a top-up's answer returned in the server (the actor applied it:
  the answer carries its new balance; wall clock ``time.time()``) -> the new balance in that
  row's cell in the DOM (``Date.now()`` in a MutationObserver callback), p99 over the phase's
  top-ups; ``p50_update_visible_ms`` too. ``p99_update_arrival_ms`` is the first half of the
  same path: the answer -> the hub's message handed to the console's listeners, so the
  difference is the page's own share (store, the per-frame redraw). ``updates_missed``: top-ups
  whose value never showed (they are not in the percentiles).
* ``js_heap_mb``: the page's JS memory at the end of the live phase, as it stands (garbage
  not yet collected included): V8's used heap (``js_heap_v8_mb``) plus the ArrayBuffers'
  backing stores (``js_array_buffers_mb``: the meters' power histories), from CDP
  ``Runtime.getHeapUsage``; the sum is what ``performance.memory.usedJSHeapSize`` says.
  ``js_heap_mb_after_gc`` after a forced collection; ``dom_nodes`` at that moment.
* ``page_meter_messages_per_s``: meter messages the page received per second in the live phase.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, sync_playwright

from bench.hub import bench_config
from bench.load import feed_every_meter
from bench.results import percentile, print_result, progress
from server.app import Park, open_park
from server.auth import Caller
from server.config import ListenAddress, ParkConfig
from server.services import Services, open_services

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
"""Debian's Chromium and its flags, for this bench and the browser tests."""
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
USER, PASSWORD = "bench", "bench-secret"  # bench_config's viewer
TOPUP = 50_000  # minor units: 500.00
TOPUP_CALLER = Caller("bench", "operator", "cli")
TIMEOUT_MS = 60_000
ROW_HEIGHT = 30  # px, the console's ROW_HEIGHT (console.js)

T = TypeVar("T")

# The page's side of the first-table phase. Started before the login form is submitted: the
# start is the submit event (a capturing listener, so before the console's own), the end the
# first DOM change after which every row in the table's viewport has a balance.
WATCH_FIRST_TABLE = """([rowHeight, total]) => {
    const bench = window.__bench = {start: null, full: null, all: null};
    window.addEventListener("submit", () => { bench.start = performance.now(); }, true);
    const body = document.querySelector("#meter-rows");
    const check = () => {
        if (bench.start === null) return;
        if (bench.full === null && body.clientHeight) {
            const need = Math.min(total, Math.floor(body.clientHeight / rowHeight));
            let filled = 0;
            for (const row of body.querySelectorAll(".vrow")) {
                if (!row.hidden && row.dataset.key
                    && row.querySelector(".c-balance").textContent) filled += 1;
            }
            if (filled >= need) bench.full = performance.now();
        }
        if (bench.all === null && window.wattkeeper.store.meters.size >= total) {
            bench.all = performance.now();
        }
    };
    new MutationObserver(check).observe(document.querySelector("#view-meters"),
        {childList: true, subtree: true, characterData: true});
}"""

FIRST_TABLE_DONE = "() => window.__bench.full !== null && window.__bench.all !== null"

# The keys of the rows wholly inside the table's viewport.
ROWS_IN_VIEW = """() => {
    const box = document.querySelector("#meter-rows").getBoundingClientRect();
    const keys = [];
    for (const row of document.querySelectorAll("#meter-rows .vrow")) {
        const r = row.getBoundingClientRect();
        if (!row.hidden && row.dataset.key && r.top >= box.top && r.bottom <= box.bottom) {
            keys.push(row.dataset.key);
        }
    }
    return keys;
}"""

# The live phase: every change of a watched meter's balance cell, and every message for it
# from the hub, with the wall clock (the server's top-ups are labelled with the same clock).
WATCH_UPDATES = """(watched) => {
    const keys = new Set(watched);
    const bench = window.__bench = {dom: [], arrived: [], messages: 0};
    new MutationObserver((records) => {
        const now = Date.now();
        for (const record of records) {
            let cell = record.target;
            if (cell.nodeType !== Node.ELEMENT_NODE) cell = cell.parentNode;
            if (!cell.classList.contains("c-balance")) continue;
            const key = cell.parentNode.dataset.key;
            if (keys.has(key)) bench.dom.push([key, cell.textContent, now]);
        }
    }).observe(document.querySelector("#meter-rows .vrows"),
        {childList: true, subtree: true, characterData: true});
    window.wattkeeper.hub.addEventListener("messages", (event) => {
        const now = Date.now();
        for (const m of event.detail.messages) {
            if (m.type !== "meter") continue;
            bench.messages += 1;
            if (keys.has(m.meter)) bench.arrived.push([m.meter, m.balance, now]);
        }
    });
}"""

DRAIN = """() => {
    const bench = window.__bench;
    const out = {dom: bench.dom, arrived: bench.arrived, messages: bench.messages};
    bench.dom = [];
    bench.arrived = [];
    return out;
}"""


class ParkThread:
    """The park, its readings and its services in ``trio.run`` on a background thread."""

    def __init__(self, config: ParkConfig) -> None:
        self.config = config
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self.park: Park | None = None
        self.services: Services | None = None
        self._thread = threading.Thread(target=self._run, name="park", daemon=True)

    def __enter__(self) -> ParkThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the park did not start") from self._error
        return self

    def __exit__(self, *_: object) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=60)
        if self._error is not None:
            raise RuntimeError("the park failed") from self._error

    @property
    def http_url(self) -> str:
        assert self.services is not None
        return self.services.http_url

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Start a task in the park's nursery, from the main thread."""
        assert self._token is not None and self._nursery is not None
        trio.from_thread.run_sync(self._nursery.start_soon, async_fn, *args,
                                  trio_token=self._token)

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the park's thread (between its tasks) and return its result."""
        assert self._token is not None
        return trio.from_thread.run_sync(function, trio_token=self._token)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as error:  # whatever it was, the main thread raises it
            self._error = error
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with open_park(self.config, with_field=False) as park, open_services(
                park, hub_overrides={"port": 0},
                http_listen=ListenAddress("127.0.0.1", 0)) as services, \
                trio.open_nursery() as nursery:
            nursery.start_soon(feed_every_meter, park)
            self.park, self.services, self._nursery = park, services, nursery
            await trio.sleep(3)  # every meter read once, allocations settled
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()


@attrs.define
class TopUps:
    """Top-ups of the meters on screen, round robin; each with its answer's balance and the
    wall clock (ms) when the answer came back."""

    meters: list[str]
    per_s: float
    done: list[tuple[str, int, float]] = attrs.Factory(list)
    stopped: bool = False

    async def run(self, park: Park) -> None:
        started = trio.current_time()
        number = 0
        run_id = time.strftime("%H%M%S")
        while not self.stopped:
            meter = self.meters[number % len(self.meters)]
            ack = await park.operations.top_up(TOPUP_CALLER, meter, TOPUP,
                                               f"bench-console-{run_id}-{number}")
            self.done.append((meter, ack.balance, time.time() * 1000))
            number += 1
            await trio.sleep_until(started + number / self.per_s)


def new_page(browser: Browser) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    return context, page


def open_login(page: Page, http_url: str) -> None:
    page.goto(http_url + "/#/meters")
    page.wait_for_selector("body[data-ready=true]", state="attached")


def submit_login(page: Page) -> None:
    page.fill("#login-user", USER)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")


def first_table(browser: Browser, http_url: str, meters: int) -> tuple[float, float]:
    """(login -> full first screen, login -> every meter in the store), ms."""
    context, page = new_page(browser)
    try:
        open_login(page, http_url)
        page.evaluate(WATCH_FIRST_TABLE, [ROW_HEIGHT, meters])
        submit_login(page)
        page.wait_for_function(FIRST_TABLE_DONE, polling=50)
        full, every = page.evaluate(
            "() => [window.__bench.full - window.__bench.start,"
            " window.__bench.all - window.__bench.start]")
        return float(full), float(every)
    finally:
        context.close()


def minor_units(text: str, decimals: int) -> int | None:
    try:
        return int(Decimal(text).scaleb(decimals))
    except ArithmeticError:
        return None


def latencies(topups: list[tuple[str, int, float]], seen: list[list[Any]],
              decimals: int) -> tuple[list[float], int]:
    """For each top-up, the first sighting of its meter at (about) its new balance after it:
    (latencies in ms, top-ups never seen). Within half a top-up of the answer's balance: the
    readings charge little meanwhile, the meter's next top-up is a whole one further."""
    by_meter: dict[str, list[tuple[float, int]]] = {}
    for meter, text, at in seen:
        value = minor_units(str(text), decimals)
        if value is not None:
            by_meter.setdefault(meter, []).append((float(at), value))
    for sightings in by_meter.values():
        sightings.sort()
    found, missed = [], 0
    for meter, balance, at in topups:
        match = next((seen_at for seen_at, value in by_meter.get(meter, ())
                      if abs(value - balance) < TOPUP // 2), None)
        if match is None:
            missed += 1
        else:
            found.append(match - at)
    return found, missed


def heap(page: Page) -> dict[str, float]:
    """The page's JS memory now and after a forced collection: V8's heap plus the
    ArrayBuffers' backing stores (the meter histories are typed arrays), which is what
    ``performance.memory.usedJSHeapSize`` reports (with ``--enable-precise-memory-info``)."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("Performance.enable")
        nodes = {m["name"]: m["value"]
                 for m in cdp.send("Performance.getMetrics")["metrics"]}["Nodes"]
        before = cdp.send("Runtime.getHeapUsage")
        cdp.send("HeapProfiler.collectGarbage")
        after = cdp.send("Runtime.getHeapUsage")
    finally:
        cdp.detach()
    return {
        "js_heap_mb": _mb(before["usedSize"] + before["backingStorageSize"]),
        "js_heap_mb_after_gc": _mb(after["usedSize"] + after["backingStorageSize"]),
        "js_heap_v8_mb": _mb(before["usedSize"]),
        "js_array_buffers_mb": _mb(before["backingStorageSize"]),
        "dom_nodes": int(nodes),
    }


def _mb(size: float) -> float:
    return round(size / 2**20, 1)


def live(browser: Browser, park: ParkThread, args: argparse.Namespace) -> dict[str, Any]:
    context, page = new_page(browser)
    try:
        open_login(page, park.http_url)
        submit_login(page)
        page.wait_for_function(
            "total => window.wattkeeper.store.meters.size >= total",
            arg=len(park.config.meters), polling=100)
        page.wait_for_selector('.vrow[data-key="M-0001"] .c-balance:not(:empty)')
        watched: list[str] = page.evaluate(ROWS_IN_VIEW)
        if not watched:
            raise RuntimeError("no meter rows in view")
        page.evaluate(WATCH_UPDATES, watched)
        progress(f"live: {len(watched)} meters in view, top-ups of {watched[0]}..{watched[-1]}")
        topups = TopUps(watched, args.changes_per_s)
        assert park.park is not None
        park.start_soon(topups.run, park.park)
        dom: list[list[Any]] = []
        arrived: list[list[Any]] = []
        messages = 0
        deadline = time.monotonic() + args.seconds
        while (left := deadline - time.monotonic()) > 0:
            page.wait_for_timeout(min(1.0, left) * 1000)
            drained = page.evaluate(DRAIN)
            dom += drained["dom"]
            arrived += drained["arrived"]
            messages = drained["messages"]
        figures = heap(page)
        park.call(lambda: setattr(topups, "stopped", True))
        page.wait_for_timeout(2_000)  # the last top-ups' values on their way
        drained = page.evaluate(DRAIN)
        dom += drained["dom"]
        arrived += drained["arrived"]
        done = park.call(lambda: list(topups.done))
    finally:
        context.close()
    decimals = park.config.server.decimals
    visible, missed = latencies(done, dom, decimals)
    arrival, _ = latencies(done, arrived, decimals)
    return {
        "p99_update_visible_ms": _rounded(percentile(visible, 0.99)),
        "p50_update_visible_ms": _rounded(percentile(visible, 0.50)),
        "p99_update_arrival_ms": _rounded(percentile(arrival, 0.99)),
        "p50_update_arrival_ms": _rounded(percentile(arrival, 0.50)),
        "updates": len(done),
        "updates_missed": missed,
        "meters_in_view": len(watched),
        "page_meter_messages_per_s": round(messages / args.seconds),
        **figures,
    }


def _rounded(value: float) -> float:
    return value if math.isnan(value) else round(value, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="wattkeeper-bench-console-"))
    config = bench_config(workdir / "lmdb", args.meters)
    results: dict[str, Any] = {"meters": len(config.meters), "seconds": args.seconds}
    with ParkThread(config) as park, sync_playwright() as driver:
        progress(f"park of {len(config.meters)} meters, console {park.http_url}")
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                         headless=True)
        try:
            runs = []
            for number in range(args.logins):
                full, every = first_table(browser, park.http_url, len(config.meters))
                progress(f"login {number + 1}: first table {full:.0f} ms, all meters "
                         f"{every:.0f} ms")
                runs.append((full, every))
            results["first_table_ms"] = round(statistics.median(r[0] for r in runs), 1)
            results["first_table_ms_runs"] = [round(r[0], 1) for r in runs]
            results["all_meters_ms"] = round(statistics.median(r[1] for r in runs), 1)
            results.update(live(browser, park, args))
        finally:
            browser.close()
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wattkeeper bench console", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--logins", type=int, default=3,
                        help="first-table runs, each a fresh browser context (default 3)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="the live phase (default 60)")
    parser.add_argument("--changes-per-s", type=float, default=5.0,
                        help="top-ups of meters on screen per second (default 5)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.meters < 100 or args.logins < 1 or args.seconds <= 0 or args.changes_per_s <= 0:
        parser.error("need --meters >= 100, --logins >= 1, --seconds > 0, --changes-per-s > 0")
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing: install Debian's chromium package "
                     "(`make browser`)")
    results = run(args)
    verdicts = [
        f"first_table_ms {results['first_table_ms']} (target <= 1500)",
        f"p99_update_visible_ms {results['p99_update_visible_ms']} (target <= 500; "
        f"{results['updates_missed']} of {results['updates']} never seen)",
        f"js_heap_mb {results['js_heap_mb']} after {args.seconds:g} s (target <= 150)",
    ]
    print_result(results, as_json=args.json, verdicts=verdicts)
    return 0
