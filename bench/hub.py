"""``wattkeeper bench hub``: the websocket hub under a control room's load, in the server.

A park of ``--meters`` meters (default 10,000; no field: the benchmark hands every meter a
reading once a second through the registry, as the Modbus side would) runs with its stream
in this process and its hub where ``--isolation`` says (``[hub] isolation``: its own process
by default, or ``inline`` on this process's thread). ``--clients`` websocket clients
(default 1,000) run in a second process (``bench.hub_clients``): every client follows
``park`` and ``alarms``; all but ``--all-clients`` (default 10) follow a random page of 100
meters, those follow every meter; all with ``batch``.

Phases, the first two ``--seconds`` long (default 20):

1. ``without``: no client connected;
2. ``with``: every client connected and subscribed;
3. five rounds of ``stalled`` (``--stall-seconds``, default 7: one more client subscribes
   to every meter and stops reading, until the hub drops it after its 5 s stall timeout)
   and ``calm`` (as long, as phase 2). The rounds interleave so that the machine's own
   drift over a minute does not read as the stalled client's effect.

Figures (the last line with ``--json`` is one JSON object):

* ``deltas_offered_per_s``: meter updates the hub had for clients (changed meter x client
  following it) per second in phase 2; ``deltas_delivered_per_s``: meter messages the clients
  received per second in phase 2.
* ``p99_delivery_ms``: reading handed to the registry (its wall label is the message's ``ts``)
  -> message received by a client, phase 2.
* ``bytes_per_client``: the server's anonymous resident memory growth (this process and,
  with ``--isolation process``, the hub's; not the LMDB map's file pages) from phase 1 to
  phase 2 / clients.
* ``control_p99_decision_ms_with_clients`` / ``_without_clients``: the control path's p99
  latency, phases 2 and 1: a probe message queued for the meter runtime (the dispatcher's run
  queue, the path every reading and command takes, behind the readings of 10,000 meters) ->
  handled, 200 probes a second. This is the part of ``bench core``'s reading -> relay decision
  that contention on the trio thread can lengthen (the policy's own ~5 µs does not change).
* ``stalled_client_effect_ms``: the other clients' p99 delivery in a round's ``stalled``
  window minus its ``calm`` one; the median of the five rounds (each is also printed).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from bench.load import LineProcess, Probe, feed_readings, phase, rss_anon
from bench.parks import park_toml
from bench.results import print_result, progress
from server.app import open_park
from server.config import ListenAddress, ParkConfig
from server.services import Services, open_services

PER_GATEWAY = 200
STALL_ROUNDS = 5


def bench_config(data_dir: Path, meters: int, isolation: str = "process") -> ParkConfig:
    """``meters`` rounded up to whole gateways of PER_GATEWAY units; the hub where
    ``isolation`` says (``[hub] isolation``)."""
    gateways = -(-meters // PER_GATEWAY)
    text = park_toml(data_dir, {f"gw{g + 1}": 20_000 + g for g in range(gateways)},
                     PER_GATEWAY, profile="sdm630", window=16, poll_interval="1s",
                     overload_delay_ms=2_000, opening_balance="1000000.00")
    text += '\n[[users]]\nname = "bench"\npassword = "bench-secret"\nrole = "viewer"\n'
    text = text.replace("[server]", '[hub]\nlisten = "127.0.0.1:8765"\nmax_clients = 100000\n'
                        f'isolation = "{isolation}"\n\n[server]', 1)
    return ParkConfig.from_toml_text(text, "bench-hub.toml")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients + 256)),
                                                hard))
    workdir = Path(tempfile.mkdtemp(prefix="wattkeeper-bench-hub-"))
    config = bench_config(workdir / "lmdb", args.meters, args.isolation)
    probe = Probe()
    results: dict[str, Any] = {"clients": args.clients, "meters": len(config.meters),
                               "isolation": args.isolation}
    free = ListenAddress("127.0.0.1", 0)
    async with open_park(config, with_field=False) as park, open_services(
            park, hub_overrides={"port": 0}, http_listen=free) as services, \
            trio.open_nursery() as nursery:
        nursery.start_soon(feed_readings, park, probe)
        progress(f"park of {len(config.meters)} meters, hub {services.hub_url}")
        await trio.sleep(3)  # every meter read once, allocations settled
        without = await phase(probe, args.seconds)
        rss_before = rss_anon([os.getpid(), getattr(services.hub, 'pid', None)])
        progress(f"without clients: control p99 {without:.2f} ms")
        clients = await start_clients(services, args, len(config.meters))
        try:
            progress("clients ready")
            await trio.sleep(3)
            offered_before = services.hub.statistics().meter_updates_offered
            await clients.send("PHASE with")
            with_clients = await phase(probe, args.seconds)
            offered = services.hub.statistics().meter_updates_offered - offered_before
            await clients.send("PHASE between")
            rss_after = rss_anon([os.getpid(), getattr(services.hub, 'pid', None)])
            progress(f"with clients: control p99 {with_clients:.2f} ms")
            for number in range(STALL_ROUNDS):
                await clients.send("STALL")
                await clients.send(f"PHASE stalled{number}")
                await trio.sleep(args.stall_seconds)
                await clients.send(f"PHASE calm{number}")
                await trio.sleep(args.stall_seconds)
            await clients.send("END")
            report = await clients.json_line()
        finally:
            await clients.stop()
        statistics = services.hub.statistics()
        nursery.cancel_scope.cancel()
    with_phase = report["with"]
    # Each round's effect, then their median: one hiccup of the host in one window (they
    # come, ~100 ms, a few times a minute here) moves one round, not the figure.
    effects = sorted(report[f"stalled{n}"]["p99_ms"] - report[f"calm{n}"]["p99_ms"]
                     for n in range(STALL_ROUNDS))
    results.update({
        "deltas_offered_per_s": round(offered / args.seconds),
        "deltas_delivered_per_s": round(with_phase["messages"] / args.seconds),
        "p99_delivery_ms": with_phase["p99_ms"],
        "p50_delivery_ms": with_phase["p50_ms"],
        "bytes_per_client": round((rss_after - rss_before) / args.clients),
        "control_p99_decision_ms_with_clients": round(with_clients, 3),
        "control_p99_decision_ms_without_clients": round(without, 3),
        "stalled_client_effect_ms": round(effects[len(effects) // 2], 1),
        "stalled_client_effect_ms_rounds": [round(effect, 1) for effect in effects],
        "dropped_stalled": statistics.dropped_stalled,
        "coalesced_updates": statistics.coalesced_updates,
        "frames_sent": statistics.frames_sent,
        "clients_closed_early": report["closed"]["clients"],
    })
    return results


async def start_clients(services: Services, args: argparse.Namespace,
                        meters: int) -> LineProcess:
    pages = args.clients - args.all_clients
    command = [sys.executable, "-m", "bench.hub_clients", services.hub_url, "--pages",
               str(pages), "--all", str(args.all_clients), "--meters", str(meters)]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONHASHSEED": "1"})
    clients = LineProcess(process, "client")
    with trio.fail_after(max(120, args.clients / 5)):
        line = await clients.line()
    if line != "READY":
        raise RuntimeError(f"the client process said {line!r}")
    return clients


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wattkeeper bench hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--all-clients", type=int, default=10,
                        help="clients that follow every meter (default 10)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase (default 20)")
    parser.add_argument("--stall-seconds", type=float, default=7.0,
                        help="each stalled and calm window (default 7: the stall timeout + 2)")
    parser.add_argument("--isolation", choices=("process", "inline"), default="process",
                        help="where the hub runs ([hub] isolation; default process)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.meters < 100 or not 0 <= args.all_clients <= args.clients or args.clients < 1:
        parser.error("need --meters >= 100 and 0 <= --all-clients <= --clients")
    results = trio.run(run, args)
    verdicts = [
        f"p99_delivery_ms {results['p99_delivery_ms']} (target <= 250)",
        f"delivered/offered {results['deltas_delivered_per_s']}/"
        f"{results['deltas_offered_per_s']} (target >= 0.95)",
        f"bytes_per_client {results['bytes_per_client']} (target <= 65536)",
        f"control p99 with/without clients {results['control_p99_decision_ms_with_clients']}"
        f"/{results['control_p99_decision_ms_without_clients']} ms (target <= 2x)",
        f"stalled_client_effect_ms {results['stalled_client_effect_ms']} (target <= 10)",
    ]
    print_result(results, as_json=args.json, verdicts=verdicts)
    return 0
