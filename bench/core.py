"""``wattkeeper bench core``: the meter runtime against one-task-per-meter, in one run.

What it measures (all in one process, one trio run, on a fresh data directory):

* ``readings_per_s`` — readings through the real path (registry -> dispatcher -> meter actor ->
  time-of-use policy -> effects), with the journal writer and the snapshotter running;
  ``baseline_readings_per_s`` — the same readings through one trio task + memory channel per
  meter running the same policy code. Both sides are timed alike: readings are built before
  timing (the Modbus edge builds them), delivering and processing them is timed, and both run
  with the same garbage-collector hygiene (``server.collector``). Each side is sampled
  ``REPEATS`` times and reports the median (``*_samples`` hold every sample). Our runtime is
  handed readings in batches of ``BATCH``, as the Modbus edge hands over the replies of one
  burst of a gateway's window; a channel per meter takes them one by one.
* ``readings_per_s_with_quotas`` — the same with every meter in a quota group (groups of
  ``QUOTA_GROUP_SIZE`` whose first alarm level is reached during the run: the groups count,
  hand out allowances and raise alarms; ``actors.quota``); samples alternate with
  ``readings_per_s``'s, so drift on the host hits both; ``quota_ratio`` is its share of
  ``readings_per_s`` (target >= 0.9), ``quota_alarms`` the alarm levels reached.
* ``p99_decision_ms`` — reading accepted -> relay command emitted, for readings that trip
  (balance exhausted), while readings are offered at a paced 50,000/s.
* ``bytes_per_meter`` — resident memory growth / meters, after every meter took a reading.
* ``max_loop_stall_ms`` — the longest the trio loop went without running a heartbeat task
  while a snapshot of every meter runs (and paced readings flow).
* ``recovery_s`` — reopening the data directory and rebuilding every meter from snapshots +
  journal.
* ``durable_topups_per_s``, ``p99_topup_ack_ms`` — top-ups from concurrent callers through
  the ledger: journaled with fsync (group commit), applied, acknowledged. Run at several caller
  counts (``topup_curve``); reported: the highest rate whose p99 ack is within 20 ms, with its
  caller count (``topup_clients``); if no level meets 20 ms, the highest rate overall.
  A money transaction only appends; the reference and per-meter indexes follow in the
  background (``persistence.index``), so each level also reports the index backlog it left
  (``index_backlog``), and ``index_catch_up_s`` is how long the writer then took to index the
  whole backlog with nothing else to do.

The last line with ``--json`` is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import trio

from actors.effects import EffectRouter
from actors.meter import NO_QUOTA, MeterActor
from actors.quota import QuotaGroup
from actors.registry import ParkRegistry
from actors.runtime import Dispatcher
from actors.snapshots import snapshot_dirty
from bench.results import percentile, print_result, progress
from persistence.codec import encode_state
from persistence.journal import Journal, open_journal
from persistence.recovery import recover_states
from persistence.store import open_store
from policies.meter import quiet_reading, step
from policies.meter_policy import MeterPolicy
from policies.money import parse_amount, parse_price
from policies.quota import QuotaPolicy, QuotaState
from policies.records import MeterState, Reading, RelayCommand
from policies.tariff import month_key
from policies.tariff_records import Band, Calendar, Tariff
from server.collector import run_collector_hygiene
from server.ledger import Ledger
from server.storage_feed import offer_snapshots

OFFERED_RATE = 50_000
START_MS = 1_795_000_000_000  # 2026-11-18, a Wednesday, 08:26 UTC
ROUND_MS = 1_000
WH_PER_ROUND = 3  # per 1 s round: ~10.8 kW, an industrial tenant polled once a second
# Concurrent top-up callers (cashier desks, payment-gateway workers). By Little's law the ack
# latency is at least callers / rate, so throughput and latency are a curve over the caller
# count, not two numbers: the bench runs each level below and reports the highest rate whose
# p99 acknowledgement stays within the target ("max throughput under a latency objective"),
# the caller count that gave it, and the whole curve.
CLIENT_LEVELS = (50, 75, 100, 125, 150, 200)
TOPUPS_PER_LEVEL = 30_000
REPEATS = 5
INDEX_WAIT_LIMIT_S = 300
"""Throughput samples per side; the reported figure is their median (the baseline's single
samples were seen to spread 42k-54k within one process)."""
BATCH = 16  # readings per delivery: the replies of one burst of a gateway's window (bus.py;
# `bench modbus` runs gateways with a window of 16)
TOPUP_P99_OBJECTIVE_MS = 20.0
QUOTA_GROUP_SIZE = 100  # meters per production line in the quota run
ROUNDS_PER_SAMPLE = 4


def tou_tariff() -> Tariff:
    bands = (
        Band("valley", 0, 8 * 60, parse_price("0.40")),
        Band("flat", 8 * 60, 18 * 60, parse_price("0.80")),
        Band("peak", 18 * 60, 24 * 60, parse_price("1.20")),
    )
    return Tariff(name="tou", bands=bands, calendar=Calendar(timezone="Asia/Shanghai"))


def bench_policy() -> MeterPolicy:
    return MeterPolicy(
        tariff=tou_tariff(),
        overload_w=30_000.0,
        overload_delay_ms=2_000,
        alarm_levels=(parse_amount("50.00"), parse_amount("20.00")),
    )


def meter_id(key: int) -> str:
    return f"M-{key:06d}"


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


class Bench:
    """Holds one run's runtime so the phases below read top to bottom."""

    def __init__(
        self, meters: int, data_dir: Path, topups_per_level: int = TOPUPS_PER_LEVEL
    ) -> None:
        self.meters = meters
        self.topups_per_level = topups_per_level
        self.data_dir = data_dir
        self.policy = bench_policy()
        self.round = 0
        self.results: dict[str, Any] = {"meters": meters}
        self.trip_sent_ns: dict[int, int] = {}
        self.trip_latencies_ms: list[float] = []
        self.extra_wh: dict[int, int] = {}
        """Register jumps given to tripping meters (kept so their registers stay monotonic)."""

    def reading(self, key: int, round_: int, power_w: float = 10_800.0) -> Reading:
        register = 1_000_000 + round_ * WH_PER_ROUND + self.extra_wh.get(key, 0)
        return Reading(START_MS + round_ * ROUND_MS, register, power_w)

    def relay_sink(self, actor: MeterActor, command: RelayCommand) -> None:
        sent = self.trip_sent_ns.pop(actor.key, None)
        if sent is not None and not command.closed:
            self.trip_latencies_ms.append((time.perf_counter_ns() - sent) / 1e6)


async def _drain(dispatcher: Dispatcher) -> None:
    while dispatcher.queue_depth:
        await trio.sleep(0.001)


async def phase_runtime(bench: Bench, journal: Journal, opening: dict[str, int]) -> None:
    router = EffectRouter()
    router.relay_sink = bench.relay_sink
    dispatcher = Dispatcher(lambda actor, message, error: None)
    registry = ParkRegistry(dispatcher, router, max_queue_depth=10**9)

    gc.collect()
    rss_before = rss_bytes()
    for key in range(bench.meters):
        registry.add(meter_id(key), bench.policy, MeterState.opening(opening[meter_id(key)]))
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        await nursery.start(run_collector_hygiene)  # as the server runs it (server.collector)

        # Every meter takes its first reading (the baseline) so states hold their own numbers.
        await feed_rounds(bench, registry, rounds=2)
        await _drain(dispatcher)
        gc.collect()
        bench.results["bytes_per_meter"] = round((rss_bytes() - rss_before) / bench.meters)

        progress("meters created and baselined")
        groups = make_quota_groups(bench, registry, router)
        plain, with_quotas = [], []
        for _ in range(REPEATS):  # interleaved, so that drift on the host hits both alike
            leave_quota_groups(registry)
            plain += await measure_throughput(bench, registry, repeats=1)
            join_quota_groups(groups)
            with_quotas += await measure_throughput(bench, registry, repeats=1)
        leave_quota_groups(registry)  # the later phases measure what they always measured
        bench.results["readings_per_s"] = round(statistics.median(plain))
        bench.results["readings_per_s_samples"] = [round(sample) for sample in plain]
        bench.results["readings_per_s_with_quotas"] = round(statistics.median(with_quotas))
        bench.results["readings_per_s_with_quotas_samples"] = [round(s) for s in with_quotas]
        bench.results["quota_ratio"] = round(
            bench.results["readings_per_s_with_quotas"] / bench.results["readings_per_s"], 3)
        bench.results["quota_groups"] = len(groups)
        bench.results["quota_alarms"] = sum(group.state.levels for group in groups)
        assert not any(group.state.blocked for group in groups)  # no trip changed the path
        progress("throughput measured, with and without quota groups")
        ledger = Ledger(registry, journal)
        journal.set_on_committed(ledger.on_committed)
        bench.results["p99_decision_ms"] = round(
            await measure_decisions(bench, registry, ledger), 3)
        progress("decisions measured")
        bench.results["max_loop_stall_ms"] = round(
            await measure_snapshot_stall(bench, registry, router, journal), 3)
        progress("snapshot stall measured")
        curve = [await measure_topups(bench, ledger, journal, clients)
                 for clients in CLIENT_LEVELS]
        within = [level for level in curve if level["p99_ms"] <= TOPUP_P99_OBJECTIVE_MS]
        best = max(within or curve, key=lambda level: level["per_s"])
        bench.results["durable_topups_per_s"] = best["per_s"]
        bench.results["p99_topup_ack_ms"] = best["p99_ms"]
        bench.results["topup_clients"] = best["clients"]
        bench.results["topup_curve"] = curve
        bench.results["index_catch_up_s"] = round(await wait_for_index(journal), 3)
        progress("top-ups measured and indexed")
        await snapshot_dirty(router, encode_state, offer_snapshots(journal))
        nursery.cancel_scope.cancel()


def make_quota_groups(bench: Bench, registry: ParkRegistry,
                      router: EffectRouter) -> list[QuotaGroup]:
    """Every meter in a quota group of ``QUOTA_GROUP_SIZE`` (a production line), with a budget
    whose first alarm level (50 %) is reached half-way through the timed rounds and whose
    80 % is not: the groups count and raise alarms while readings flow, and no trip changes
    the readings' path."""
    members = list(registry)
    month = month_key(dt.datetime.fromtimestamp(START_MS / 1000, dt.UTC).date())
    timed_rounds = 2 * REPEATS * ROUNDS_PER_SAMPLE
    groups = []
    for first in range(0, len(members), QUOTA_GROUP_SIZE):
        chunk = members[first:first + QUOTA_GROUP_SIZE]
        used = sum(member.state.month_wh for member in chunk)
        budget = 2 * (used + len(chunk) * WH_PER_ROUND * timed_rounds // 2)
        policy = QuotaPolicy(f"line-{first // QUOTA_GROUP_SIZE}", "kwh", budget, (50, 80, 100))
        group = QuotaGroup(policy, chunk, registry.dispatcher, router, lambda: START_MS,
                           lambda: START_MS)
        group.start(QuotaState(), month)
        groups.append(group)
    return groups


def leave_quota_groups(registry: ParkRegistry) -> None:
    for member in registry:
        member.quota = None
        member.quota_wh_until = member.quota_minor_until = NO_QUOTA


def join_quota_groups(groups: list[QuotaGroup]) -> None:
    for group in groups:
        for member in group.members:
            member.quota = group
        group.start(group.state, group.state.month)  # counts again, new allowances


Batch = tuple[list[int], list[Reading]]
"""Meter keys and their readings, as a gateway's bus hands over the replies of one burst."""


def build_rounds(bench: Bench, rounds: int) -> list[list[Batch]]:
    """The readings of the next ``rounds`` rounds, each round in batches of ``BATCH`` meters.

    Built before timing, on both sides: a reading reaches a runtime already built (the Modbus
    edge builds it), so construction is not what either runtime is measured on. Our runtime
    takes them in batches as the Modbus edge delivers them (the replies of one burst of a
    gateway's pipeline window, ``GatewayBus``); the baseline, one channel per meter, cannot."""
    prepared = []
    for _ in range(rounds):
        bench.round += 1
        readings = [bench.reading(key, bench.round) for key in range(bench.meters)]
        prepared.append([
            (list(range(first, min(first + BATCH, bench.meters))),
             readings[first:first + BATCH])
            for first in range(0, bench.meters, BATCH)
        ])
    return prepared


async def deliver_rounds(registry: ParkRegistry, prepared: list[list[Batch]]) -> int:
    """Offer prepared readings to every meter as fast as the runtime takes them."""
    deliver = registry.deliver_readings_nowait
    dispatcher = registry.dispatcher
    sent = 0
    for batches in prepared:
        for keys, readings in batches:
            deliver(keys, readings)
            sent += len(readings)
            if dispatcher.queue_depth >= 2_000:
                await trio.lowlevel.checkpoint()
    return sent


async def feed_rounds(bench: Bench, registry: ParkRegistry, rounds: int) -> int:
    """Build and offer ``rounds`` readings per meter as they go (untimed: no prepared lists
    linger in the heap when memory per meter is measured)."""
    deliver = registry.deliver_reading_nowait
    dispatcher = registry.dispatcher
    sent = 0
    for _ in range(rounds):
        bench.round += 1
        round_ = bench.round
        for key in range(bench.meters):
            deliver(key, bench.reading(key, round_))
            sent += 1
            if dispatcher.queue_depth >= 20_000:
                await trio.lowlevel.checkpoint()
    return sent


async def measure_throughput(bench: Bench, registry: ParkRegistry,
                             repeats: int = REPEATS) -> list[float]:
    """``repeats`` samples, each timed: delivering ``ROUNDS_PER_SAMPLE`` prepared rounds and
    the runtime processing all of them."""
    samples = []
    for _ in range(repeats):
        prepared = build_rounds(bench, rounds=ROUNDS_PER_SAMPLE)
        started = time.perf_counter()
        sent = await deliver_rounds(registry, prepared)
        await _drain(registry.dispatcher)
        samples.append(sent / (time.perf_counter() - started))
        del prepared
    return samples


async def offer_paced(
    bench: Bench,
    registry: ParkRegistry,
    seconds: float,
    tripping: Callable[[int], bool] = lambda key: False,
) -> None:
    """Offer readings at OFFERED_RATE, in 1 ms ticks, round-robin over the meters."""
    per_tick = OFFERED_RATE // 1000
    deliver = registry.deliver_reading_nowait
    sent_ns = bench.trip_sent_ns
    tripped: set[int] = set()
    key = 0
    started = trio.current_time()
    ticks = int(seconds * 1000)
    for tick in range(ticks):
        for _ in range(per_tick):
            if key == 0:
                bench.round += 1
            if tripping(key) and key not in tripped:
                # One reading worth 10 kWh: charged far past the 0.01 left, so it trips.
                tripped.add(key)
                bench.extra_wh[key] = bench.extra_wh.get(key, 0) + 10_000
                sent_ns[key] = time.perf_counter_ns()
            deliver(key, bench.reading(key, bench.round))
            key = (key + 1) % bench.meters
        await trio.sleep_until(started + (tick + 1) / 1000)


async def measure_decisions(bench: Bench, registry: ParkRegistry, ledger: Ledger) -> float:
    """Every 50th meter is adjusted (journaled) down to 0.01 so its next reading trips it."""

    async def leave_one_minor_unit(key: int) -> None:
        actor = registry.by_key(key)
        await ledger.adjust(actor.meter_id, 1 - actor.state.balance, f"bench-trip-{key}",
                            START_MS, "bench")

    async with trio.open_nursery() as nursery:
        for key in range(0, bench.meters, 50):
            nursery.start_soon(leave_one_minor_unit, key)
    await _drain(registry.dispatcher)
    bench.trip_latencies_ms.clear()
    await offer_paced(bench, registry, seconds=bench.meters / OFFERED_RATE,
                      tripping=lambda key: key % 50 == 0)
    await _drain(registry.dispatcher)
    return percentile(bench.trip_latencies_ms, 0.99)


async def measure_snapshot_stall(
    bench: Bench, registry: ParkRegistry, router: EffectRouter, journal: Journal
) -> float:
    for actor in registry:
        router.mark_dirty(actor)
    longest = 0.0
    done = False

    async def heartbeat() -> None:
        # A loop-lag monitor: ask to wake 1 ms from now; lateness is how long the loop could not
        # run anything. (A task spinning on checkpoints would measure the same but would keep
        # the trio thread 100% busy, which is not what the server's loop does.)
        nonlocal longest
        clock = time.perf_counter
        while not done:
            before = clock()
            await trio.sleep(0.001)
            longest = max(longest, clock() - before - 0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat)
        nursery.start_soon(offer_paced, bench, registry, 2.0)
        written = await snapshot_dirty(router, encode_state, offer_snapshots(journal))
        assert written == bench.meters
        await journal.flush()
        done = True
    return longest * 1000


async def measure_topups(
    bench: Bench, ledger: Ledger, journal: Journal, clients: int
) -> dict[str, Any]:
    """``bench.topups_per_level`` top-ups from ``clients`` callers, each awaiting its ack in
    turn."""
    per_client = max(1, bench.topups_per_level // clients)
    latencies: list[float] = []
    # Requests are built before timing: a real caller's request arrives already formed;
    # formatting ids and references is client work, not the server's.
    requests = [
        [(meter_id((index * per_client + n) % bench.meters), f"bench-{clients}-{index}-{n}")
         for n in range(per_client)]
        for index in range(clients)
    ]

    async def client(index: int) -> None:
        for meter, reference in requests[index]:
            started = time.perf_counter()
            await ledger.top_up(meter, 100_00, reference, START_MS)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(client, index)
    elapsed = time.perf_counter() - started
    return {"clients": clients, "per_s": round(clients * per_client / elapsed),
            "p99_ms": round(percentile(latencies, 0.99), 3),
            "index_backlog": journal.statistics().index_lag}


async def wait_for_index(journal: Journal) -> float:
    """Seconds until the writer has indexed every committed entry."""
    started = time.perf_counter()
    while journal.statistics().index_lag:
        if time.perf_counter() - started > INDEX_WAIT_LIMIT_S:
            raise RuntimeError(f"the index backlog is not written after {INDEX_WAIT_LIMIT_S} s")
        await trio.sleep(0.01)
    return time.perf_counter() - started


async def phase_baseline(bench: Bench, opening: dict[str, int]) -> list[float]:
    """The same readings through one trio task + memory channel per meter (``REPEATS``
    samples)."""
    policy = bench.policy
    senders: list[trio.MemorySendChannel[Reading]] = []
    processed = 0

    async def meter_task(state: MeterState, receive: trio.MemoryReceiveChannel[Reading]) -> None:
        nonlocal processed
        async for reading in receive:
            # The meter actor's policy calls: the quiet case, else validation and the full path.
            new = quiet_reading(state, reading, policy)
            state = new if new is not None else step(state, reading, policy)[0]
            processed += 1

    async with trio.open_nursery() as nursery:
        # The same collector hygiene as the runtime gets: without it full collections walk
        # 100,000 tasks and their frames (measured ~30k/s instead of ~44k/s), which would
        # measure the garbage collector's settings rather than the runtime's design.
        await nursery.start(run_collector_hygiene)
        for key in range(bench.meters):
            send, receive = trio.open_memory_channel[Reading](2)
            senders.append(send)
            nursery.start_soon(meter_task, MeterState.opening(opening[meter_id(key)]), receive)
        await trio.sleep(0.1)
        # The first round sets baselines, like above; then samples of the same timed region
        # as measure_throughput: delivering 2 prepared rounds (a channel holds 2) and
        # processing all of them.
        first = [bench.reading(key, 1) for key in range(bench.meters)]
        for send, reading in zip(senders, first, strict=True):
            send.send_nowait(reading)
        del first
        while processed < bench.meters:
            await trio.sleep(0.001)
        samples = []
        for repeat in range(REPEATS):
            prepared = [[bench.reading(key, round_) for key in range(bench.meters)]
                        for round_ in (2 + 2 * repeat, 3 + 2 * repeat)]
            target = processed + 2 * bench.meters
            started = time.perf_counter()
            for readings in prepared:
                for send, reading in zip(senders, readings, strict=True):
                    send.send_nowait(reading)
            while processed < target:
                await trio.sleep(0.001)
            samples.append(2 * bench.meters / (time.perf_counter() - started))
            del prepared
        nursery.cancel_scope.cancel()
    return samples


async def phase_recovery(bench: Bench, opening: dict[str, int]) -> float:
    policy = bench.policy

    def apply(state: MeterState, message: object) -> MeterState:
        return step(state, message, policy)[0]

    started = time.perf_counter()
    with open_store(bench.data_dir) as store:
        states = recover_states(store, opening, apply).states
        router = EffectRouter()
        registry = ParkRegistry(Dispatcher(lambda actor, message, error: None), router)
        for key in range(bench.meters):
            mid = meter_id(key)
            registry.add(mid, policy, states[mid])
    elapsed = time.perf_counter() - started
    assert len(registry) == bench.meters
    return elapsed


async def run(meters: int, topups_per_level: int = TOPUPS_PER_LEVEL) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="wattkeeper-bench-"))
    try:
        bench = Bench(meters, data_dir, topups_per_level)
        opening = {meter_id(key): parse_amount("100.00") for key in range(meters)}
        # The runtime goes first, so its memory growth is measured on a fresh process.
        with open_store(data_dir) as store:
            async with open_journal(store) as journal:
                await phase_runtime(bench, journal, opening)
        gc.collect()
        bench.results["recovery_s"] = round(await phase_recovery(bench, opening), 3)
        progress("recovery measured")
        gc.collect()
        samples = await phase_baseline(bench, opening)
        bench.results["baseline_readings_per_s"] = round(statistics.median(samples))
        bench.results["baseline_readings_per_s_samples"] = [round(sample) for sample in samples]
        results = bench.results
        results["speedup"] = round(results["readings_per_s"] / results["baseline_readings_per_s"],
                                   2)
        return results
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wattkeeper bench core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--topups-per-level", type=int, default=TOPUPS_PER_LEVEL,
                        help="top-ups at each caller count")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.meters < 100 or args.topups_per_level < max(CLIENT_LEVELS):
        parser.error(f"need --meters >= 100 and --topups-per-level >= {max(CLIENT_LEVELS)}")
    results = trio.run(run, args.meters, args.topups_per_level)
    print_result(results, as_json=args.json)
    return 0

