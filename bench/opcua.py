"""``wattkeeper bench opcua``: the OPC UA server of a park of ``--meters`` meters (default
10,000), in its own process as ``wattkeeper serve`` runs it, under a SCADA's subscription.

The park runs in this process without a field: every meter gets ``--rate`` readings a second
(default 4) through the registry, as the Modbus side would deliver them. Phases, each
``--seconds`` long (default 15):

1. ``without``: no OPC UA server;
2. the OPC UA server starts (its address space built from the park's state), an asyncua
   client in a process of its own (``bench.opcua_clients``) subscribes to ``PowerW`` of
   ``--watch`` meters (default 1,000) with a 100 ms publishing interval; then ``with``.

Figures (the last line with ``--json`` is one JSON object):

* ``build_s``: the address space of every meter, built by the OPC UA process (its own clock);
  ``baseline_build_s``: asyncua's ``add_object`` / ``add_variable`` node by node, measured
  here for ``--baseline-sample`` meters (default 300) and scaled linearly to ``meters`` (an
  underestimate: that path re-scans the parent's references for every child, so a folder of
  10,000 meters costs more than linearly);
* ``updates_per_s``: meter variable values the OPC UA process absorbed (changed values it
  applied, watched or not) per second of its own CPU time in phase ``with``; and
  ``updates_live_per_s``: per second of wall time (what the park offered);
* ``p99_subscription_ms`` / ``p50_...``: reading handed to the registry (its wall label is
  the notification's SourceTimestamp) -> data-change notification at the client;
* ``control_p99_decision_ms_with_opcua`` / ``_without_opcua``: the control path's p99,
  phases 2 and 1 (``bench.load.Probe``: a message through the dispatcher's run queue, behind
  the readings);
* ``rss_mb_per_1000_meters``: the OPC UA process's anonymous resident memory after the
  build, per 1,000 meters (asyncua's own ~100 MB included).

``--isolation thread`` runs the same OPC UA server in a thread of the server's process (its
own asyncio loop, the same pipe) instead: the alternative the decision in docs/decisions.md
was measured against. It is not a mode of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import trio

from bench.hub import bench_config
from bench.load import LineProcess, Probe, feed_readings, phase, rss_anon
from bench.results import print_result, progress
from server.app import open_park
from server.config import ListenAddress
from server.edge_process import Child
from server.opcua_process import OpcUaProcess
from server.opcua_worker import run_worker
from server.services import open_services, start_opcua


async def baseline_build_s(sample: int) -> float:
    """asyncua's own API, node by node, for ``sample`` meters like ours (an object and seven
    variables each, under one folder)."""
    from asyncua import Server, ua

    server = Server()
    await server.init()
    ns = await server.register_namespace("urn:wattkeeper:baseline")
    folder = await server.nodes.objects.add_folder(ua.NodeId("Meters", ns), "Meters")
    began = time.perf_counter()
    for number in range(sample):
        meter = await folder.add_object(ua.NodeId(f"meter:B-{number}", ns), f"B-{number}")
        for name in ("Balance", "PowerW", "EnergyKWh", "RelayClosed", "RelayReason", "Alarm",
                     "Online"):
            await meter.add_variable(ua.NodeId(f"meter.{name}:B-{number}", ns), name, 0.0)
    return time.perf_counter() - began


class ThreadChild:
    """The OPC UA worker in a thread of this process, looking like a child process."""

    def __init__(self, sock: socket.socket) -> None:
        self.pid = os.getpid()
        self.returncode: int | None = None
        self._done = threading.Event()
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(run_worker(self._sock, own_process=False))
        finally:
            self.returncode = 0
            self._done.set()

    async def wait(self) -> int:
        await trio.to_thread.run_sync(self._done.wait, abandon_on_cancel=True)
        return 0

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)


class ThreadedOpcUa(OpcUaProcess):
    async def spawn(self, theirs: socket.socket) -> Child:
        return ThreadChild(socket.socket(fileno=os.dup(theirs.fileno())))


async def start_client(url: str, meter_ids: list[str]) -> LineProcess:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "bench.opcua_clients", url, "--meter-ids", ",".join(meter_ids)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1])
    client = LineProcess(process, "OPC UA client")
    with trio.fail_after(300):
        line = await client.line()
    if line != "READY":
        raise RuntimeError(f"the OPC UA client process said {line!r}")
    return client


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="wattkeeper-bench-opcua-"))
    # No [opcua] table: the OPC UA server is started by hand, for phase 2.
    config = bench_config(workdir / "lmdb", args.meters, "process")
    meters = len(config.meters)
    progress(f"baseline: asyncua node by node, {args.baseline_sample} meters")
    sample_s = await trio.to_thread.run_sync(
        lambda: asyncio.run(baseline_build_s(args.baseline_sample)))
    results: dict[str, Any] = {
        "meters": meters,
        "isolation": args.isolation,
        "baseline_build_s": round(sample_s * meters / args.baseline_sample, 1),
        "baseline_sample_meters": args.baseline_sample,
    }
    probe = Probe()
    endpoint = "opc.tcp://127.0.0.1:0/wattkeeper/"
    async with open_park(config, with_field=False) as park, open_services(
            park, hub_overrides={"port": 0},
            http_listen=ListenAddress("127.0.0.1", 0)) as services, \
            trio.open_nursery() as nursery:
        nursery.start_soon(feed_readings, park, probe, args.rate)
        progress(f"park of {meters} meters, {args.rate:g} readings/s each")
        await trio.sleep(3)
        without = await phase(probe, args.seconds)
        progress(f"without OPC UA: control p99 {without:.2f} ms")
        opcua = start_opcua(park, services.stream, endpoint, security="none",
                            kind=ThreadedOpcUa if args.isolation == "thread" else OpcUaProcess)
        url: str = await nursery.start(opcua.run)
        await trio.sleep(1.5)  # its first figures
        statistics = opcua.statistics()
        results["build_s"] = round(statistics.build_s, 2)
        if args.isolation == "process":
            results["rss_mb_per_1000_meters"] = round(
                rss_anon([opcua.pid]) / 2**20 / (meters / 1000), 1)
        progress(f"OPC UA on {url}: address space in {statistics.build_s:.2f} s")
        watched = [actor.meter_id for actor in park.registry][:args.watch]
        client = await start_client(url, watched)
        try:
            await trio.sleep(3)
            assert opcua.pid is not None
            cpu_before, updates_before = cpu_seconds(opcua.pid), opcua.statistics().updates
            await client.send("START")
            began = time.perf_counter()
            with_opcua = await phase(probe, args.seconds)
            await client.send("REPORT")
            report = await client.json_line()
            await trio.sleep(1.2)  # the figures of the window's end
            elapsed = time.perf_counter() - began
            updates = opcua.statistics().updates - updates_before
            cpu = cpu_seconds(opcua.pid) - cpu_before
            await client.send("END")
        finally:
            await client.stop()
        progress(f"with OPC UA: control p99 {with_opcua:.2f} ms")
        nursery.cancel_scope.cancel()
    results.update({
        "updates_per_s": round(updates / cpu) if cpu > 0 else None,
        "updates_live_per_s": round(updates / elapsed),
        "opcua_cpu_share": round(cpu / elapsed, 2),
        "p99_subscription_ms": report["p99_ms"],
        "p50_subscription_ms": report["p50_ms"],
        "notifications": report["notifications"],
        "watched_meters": len(watched),
        "control_p99_decision_ms_with_opcua": round(with_opcua, 3),
        "control_p99_decision_ms_without_opcua": round(without, 3),
    })
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wattkeeper bench opcua", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=4.0,
                        help="readings per meter per second (default 4)")
    parser.add_argument("--watch", type=int, default=1_000,
                        help="meters whose PowerW the client subscribes to (default 1000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per phase (default 15)")
    parser.add_argument("--baseline-sample", type=int, default=300,
                        help="meters built node by node for the baseline (default 300)")
    parser.add_argument("--isolation", choices=("process", "thread"), default="process",
                        help="where the OPC UA server runs (default process; thread: the "
                             "alternative, for comparison)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.meters < 200 or args.watch < 1 or args.baseline_sample < 10:
        parser.error("need --meters >= 200, --watch >= 1, --baseline-sample >= 10")
    args.watch = min(args.watch, args.meters)
    results = trio.run(run, args)
    verdicts = [
        f"build_s {results['build_s']} (target <= 10 and <= baseline "
        f"{results['baseline_build_s']} / 10)",
        f"updates_per_s {results['updates_per_s']} (target >= 100000)",
        f"p99_subscription_ms {results['p99_subscription_ms']} (target <= 250)",
        f"control p99 with/without OPC UA {results['control_p99_decision_ms_with_opcua']}/"
        f"{results['control_p99_decision_ms_without_opcua']} ms (target <= 2x)",
    ]
    print_result(results, as_json=args.json, verdicts=verdicts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
