"""The client side of ``wattkeeper bench hub``: many websocket clients in their own process.

``python -m bench.hub_clients URL --pages N --all M --meters K --user U --password P``:
connects ``N + M`` clients (trio-websocket; the benchmark measures the server, not the client
library), each logs in and subscribes with ``batch`` to ``park`` and ``alarms`` plus, for the
first N, a random page of 100 meters, for the last M, every meter. Prints ``READY`` once every
snapshot is in. Then it reads commands on stdin, one a line:

* ``PHASE name``: from now on, count into phase ``name``;
* ``STALL``: open one more client that subscribes to every meter without batches and never
  reads again;
* ``END``: print one JSON object (per phase: meter messages, bytes, latency percentiles) and
  exit.

Latency of a meter message = the receiving wall clock - its ``ts`` (the reading's wall label,
which the benchmark sets when it hands the reading to the registry): state change -> frame
received, across processes on one machine.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import trio
import trio_websocket

from bench.results import percentile

PAGE = 100
# A meter message's last fields (protocols.ws.protocol.MeterEncoder): a literal the regex
# engine finds fast, where a lazy scan from "type" took a third of this process's CPU.
TS = re.compile(r'"faulted":(?:true|false),"ts":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z"')


class Phase:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.latencies: list[float] = []


class Counters:
    def __init__(self) -> None:
        self.phases: dict[str, Phase] = {"setup": Phase()}
        self.current = self.phases["setup"]
        self.closed = 0

    def switch(self, name: str) -> None:
        self.current = self.phases.setdefault(name, Phase())


_epoch_cache: dict[str, float] = {}


def _epoch_ms(second: str) -> float:
    value = _epoch_cache.get(second)
    if value is None:
        value = time.mktime(time.strptime(second, "%Y-%m-%dT%H:%M:%S")) - time.timezone
        value *= 1000
        if len(_epoch_cache) > 100_000:
            _epoch_cache.clear()
        _epoch_cache[second] = value
    return value


async def run_client(url: str, user: str, password: str, subscription: dict[str, Any],
                     counters: Counters, ready: Callable[[], None]) -> None:
    """One client; dropped by the server (stalled: this process could not keep up), it is
    counted in ``closed`` and, if it was not ready yet, as ready, so the run goes on."""
    is_ready = False
    try:
        # 64 KiB reads (trio-websocket's default is 4 KiB): a batch frame of a client that
        # follows every meter is ~60 KB, and this process must not be what limits the run.
        async with trio_websocket.open_websocket_url(url, max_message_size=1 << 24,
                                                     receive_buffer_size=1 << 16) as ws:
            await ws.send_message(json.dumps({"type": "hello", "user": user,
                                              "password": password}))
            welcome = json.loads(await ws.get_message())
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"login refused: {welcome}")
            await ws.send_message(json.dumps({"type": "subscribe", "id": "s", **subscription}))
            while True:
                text = await ws.get_message()
                assert isinstance(text, str)
                if '"snapshot_done"' in text:
                    break
            is_ready = True
            ready()
            epoch_ms = _epoch_ms
            while True:
                text = await ws.get_message()
                assert isinstance(text, str)
                now = time.time() * 1000
                phase = counters.current
                phase.bytes += len(text)
                latencies = phase.latencies
                count = 0
                for match in TS.finditer(text):
                    count += 1
                    latencies.append(now - epoch_ms(match[1]) - int(match[2]))
                phase.messages += count
    except (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, OSError):
        counters.closed += 1
        if not is_ready:
            ready()


async def stalled_client(url: str, user: str, password: str) -> None:
    """Subscribes to everything, then never reads again (its socket fills up)."""
    async with trio_websocket.open_websocket_url(url) as ws:
        await ws.send_message(json.dumps({"type": "hello", "user": user, "password": password}))
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "subscribe", "topics": ["meters"]}))
        await trio.sleep_forever()


async def main(args: argparse.Namespace) -> None:
    counters = Counters()
    rng = random.Random(args.seed)
    total = args.pages + args.all
    ready_count = 0
    all_ready = trio.Event()

    def ready() -> None:
        nonlocal ready_count
        ready_count += 1
        if ready_count == total:
            all_ready.set()

    ids = [f"M-{n:04d}" for n in range(1, args.meters + 1)]  # as bench/parks.py names them
    async with trio.open_nursery() as nursery:
        for index in range(total):
            subscription: dict[str, Any] = {"topics": ["meters", "park", "alarms"],
                                            "batch": True}
            if index < args.pages:
                start = rng.randrange(0, max(1, args.meters - PAGE + 1))
                subscription["meters"] = ids[start:start + PAGE]
            nursery.start_soon(run_client, args.url, args.user, args.password, subscription,
                               counters, ready)
            if index % 50 == 49:
                await trio.sleep(0.05)  # a control room does not log in all at once
        await all_ready.wait()
        print("READY", flush=True)
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffered = b""
        while True:
            data = await stdin.receive_some()
            if not data:
                break
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                words = line.decode().split()
                if not words:
                    continue
                if words[0] == "PHASE":
                    counters.switch(words[1])
                elif words[0] == "STALL":
                    nursery.start_soon(stalled_client, args.url, args.user, args.password)
                elif words[0] == "END":
                    report = {name: {
                        "messages": phase.messages, "bytes": phase.bytes,
                        "p50_ms": round(percentile(phase.latencies, 0.50), 1),
                        "p99_ms": round(percentile(phase.latencies, 0.99), 1),
                        "max_ms": round(max(phase.latencies, default=math.nan), 1)}
                        for name, phase in counters.phases.items()}
                    report["closed"] = {"clients": counters.closed}
                    print(json.dumps(report), flush=True)
                    nursery.cancel_scope.cancel()
                    return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.hub_clients")
    parser.add_argument("url")
    parser.add_argument("--pages", type=int, default=990)
    parser.add_argument("--all", type=int, default=10)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--user", default="bench")
    parser.add_argument("--password", default="bench-secret")
    parser.add_argument("--seed", type=int, default=1)
    trio.run(main, parser.parse_args())
