"""``wattkeeper bench notify``: 10,000 meters cross a balance level at once; every notice goes
to a local webhook receiver and a local SMTP server; then a second level is crossed and the
server is SIGKILLed in the middle of the burst and restarted.

What it measures (the last line with ``--json``):

* ``notices``: notices raised by the first burst (one per meter); ``delivered``: deliveries that
  arrived (webhook + e-mail, both bursts); ``notices_per_s``: first-burst notices whose every
  delivery arrived, per second from the crossing to the last arrival;
* ``p99_notice_ms``: the level crossed in the actor (the reading's time, the notice's ``ts``)
  -> arrival at the receiver, over the first burst's deliveries;
* ``control_p99_decision_ms_without_burst`` / ``_with_burst``: a reading that leaves a probe
  meter without credit -> its relay command, 100 a second for 5 s, before the first burst and
  while it is delivered (``bench.notify_server``);
* ``lost``: second-burst deliveries that never arrived although the server (its writer and its
  delivery process too: the whole process group) was SIGKILLed while delivering them and then
  restarted; ``duplicates``: crossings that reached a receiver as two different notices (two ids
  for one meter's level, or one id with two bodies); ``redelivered``: deliveries that arrived
  twice with the same id (sent, then killed before the answer was written down; receivers drop
  them by id, CONTRACT.md section 7).

The baseline is the same park with no contacts (``control_p99_decision_ms_without_burst``
measured in the same run): the targets are ``notices_per_s`` >= 2,000, ``lost`` =
``duplicates`` = 0, and the control p99 with the burst at most twice the one without.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from bench.results import percentile, print_result, progress

SECRET: Final = "bench-notify-secret-32-bytes-long!!"
FIRST_LEVEL_S: Final = 8.33
"""50.05 -> 50.00 at 6 Wh/s and 1.00/kWh (``bench.notify_server``)."""
KILL_AT_SHARE: Final = 0.3
WAIT_S: Final = 120.0
REPO: Final = Path(__file__).resolve().parents[1]


def park_toml(data_dir: Path, meters: int, probes: int, smtp_port: int, hook: str) -> str:
    parts = [f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"
snapshot_interval = "2s"

[tariffs.flat]
kind = "flat"
price = "1.00"

[meter_defaults]
profile = "sdm630"
relay_coil = 0
tariff = "flat"
overload_w = 100000

[notify]
per_hour = 20
burst = 5
runout_hours = 0

[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "park@bench.example"

[notify.webhook]
secret = "{SECRET}"
"""]
    units = 247  # per gateway: every Modbus unit id
    for g in range((meters + probes) // units + 1):
        parts.append(f'[[gateways]]\nid = "gw{g}"\nhost = "127.0.0.1"\nport = {20000 + g}\n')
    for n in range(meters):
        parts.append(f'[[meters]]\nid = "B-{n}"\ntenant = "b{n}"\ngateway = "gw{n // units}"\n'
                     f'unit = {n % units + 1}\n'
                     f'opening_balance = "50.05"\nalarm_levels = ["50.00", "49.80"]\n')
    for p in range(probes):
        n = meters + p
        parts.append(f'[[meters]]\nid = "P-{p}"\ntenant = "probes"\ngateway = "gw{n // units}"\n'
                     f'unit = {n % units + 1}\nopening_balance = "0.01"\n')
    for n in range(meters):
        parts.append(f'[tenants.b{n}]\nemails = ["b{n}@bench.example"]\n'
                     f'webhook = "{hook}/b{n}"\n')
    return "\n".join(parts)


@attrs.frozen
class Arrival:
    channel: str
    notice_id: str
    at_s: float
    ts_s: float
    digest: str


class Receivers:
    """``bench.notify_receivers`` (niced), and what arrived there, in order."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.ports: tuple[int, int] = (0, 0)
        self.process: trio.Process | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "bench.notify_receivers", SECRET], stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert self.process.stdout is not None
        buffer = b""
        started = False
        try:
            while True:
                data = await self.process.stdout.receive_some()
                if not data:
                    return
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    fields = line.decode().split("\t")
                    if not started:
                        self.ports = (int(fields[0]), int(fields[1]))
                        started = True
                        task_status.started()
                        continue
                    channel, notice_id, at_s, ts_s, digest = fields
                    self.arrivals.append(Arrival(channel, notice_id, float(at_s), float(ts_s),
                                                 digest))
        finally:
            with trio.CancelScope(shield=True):
                self.process.kill()
                await self.process.wait()

    def of(self, channel: str, level: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.channel == channel and _level(a) == level]


class Server:
    """``bench.notify_server`` in a process group of its own (killed whole)."""

    def __init__(self, config: Path, start_s: float, mode: str) -> None:
        self._args = [sys.executable, "-m", "bench.notify_server", str(config), str(start_s),
                      mode]
        self.events: list[dict[str, Any]] = []
        self.process: trio.Process | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self.process = await trio.lowlevel.open_process(
            self._args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        task_status.started()
        assert self.process.stdout is not None
        buffer = b""
        while True:
            data = await self.process.stdout.receive_some()
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.startswith(b"{"):
                    self.events.append(json.loads(line))

    async def send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def event(self, name: str, after: int = 0, timeout_s: float = 120.0) -> dict[str, Any]:
        with trio.fail_after(timeout_s):
            while True:
                for event in self.events[after:]:
                    if event.get("event") == name:
                        return event
                await trio.sleep(0.02)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)


def _level(a: Arrival) -> str:
    """``<meter>/low_balance/<level>/<journal seq>`` -> the level ("" for other notices)."""
    parts = a.notice_id.split("/")
    return parts[2] if len(parts) == 4 and parts[1] == "low_balance" else ""


def count_duplicates(arrivals: list[Arrival]) -> tuple[int, int]:
    """(crossings told as two notices, same-id repeats) over one channel's arrivals."""
    bodies: dict[str, str] = {}
    crossings: dict[tuple[str, str], set[str]] = defaultdict(set)
    different = repeats = 0
    for a in arrivals:
        if _level(a):
            crossings[a.notice_id.split("/")[0], _level(a)].add(a.notice_id)
        seen = bodies.get(a.notice_id)
        if seen is None:
            bodies[a.notice_id] = a.digest
            continue
        repeats += 1
        different += seen != a.digest
    return different + sum(len(ids) - 1 for ids in crossings.values()), repeats


async def run(meters: int, probes: int) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "notify", "meters": meters}
    receivers = Receivers()
    with tempfile.TemporaryDirectory(prefix="wk-notify-") as tmp:
        async with trio.open_nursery() as nursery:
            await nursery.start(receivers.run)
            hook_port, smtp_port = receivers.ports
            config = Path(tmp) / "park.toml"
            config.write_text(park_toml(Path(tmp) / "data", meters, probes, smtp_port,
                                        f"http://127.0.0.1:{hook_port}/hook"))
            start_s = time.time()
            first = Server(config, start_s, "run")
            await nursery.start(first.run)
            await first.event("ready")
            progress("server ready")
            round_one = await first.event("round")
            await first.send("probe")
            without = await first.event("probe")
            result["control_p99_decision_ms_without_burst"] = without["p99_ms"]
            crossing = round_one["at"] + FIRST_LEVEL_S
            await trio.sleep_until(trio.current_time() + max(0.0, crossing - time.time()))
            await first.send("probe")
            with_burst = await first.event("probe", after=len(first.events))
            result["control_p99_decision_ms_with_burst"] = with_burst["p99_ms"]
            progress("first burst: delivering")
            await _all_arrived(receivers, meters, "1")
            _first_figures(result, receivers, meters)
            progress(f"first burst delivered: {result['notices_per_s']} notices/s")
            with trio.fail_after(WAIT_S):
                while len(receivers.of("webhook", "2")) < meters * KILL_AT_SHARE:
                    await trio.sleep(0.005)
            first.kill()
            assert first.process is not None
            await first.process.wait()
            killed_at = len(receivers.of("webhook", "2"))
            progress(f"SIGKILL with {killed_at} of {meters} second-burst webhooks in")
            second = Server(config, start_s, "resume")
            await nursery.start(second.run)
            await second.event("ready")
            progress("restarted")
            await _all_arrived(receivers, meters, "2", timeout_s=WAIT_S)
            await trio.sleep(2.0)  # a late duplicate would show up here
            _crash_figures(result, receivers, meters, killed_at)
            await second.send("stop")
            with trio.move_on_after(10):
                assert second.process is not None
                await second.process.wait()
            if second.process is not None and second.process.returncode is None:
                second.kill()
            nursery.cancel_scope.cancel()
    return result


async def _all_arrived(receivers: Receivers, meters: int, level: str,
                       timeout_s: float = WAIT_S) -> None:
    with trio.move_on_after(timeout_s):
        while True:
            hooks = {a.notice_id for a in receivers.of("webhook", level)}
            mails = {a.notice_id for a in receivers.of("email", level)}
            if len(hooks) >= meters and len(mails) >= meters:
                return
            await trio.sleep(0.05)


def _first_figures(result: dict[str, Any], receivers: Receivers, meters: int) -> None:
    hooks, mails = receivers.of("webhook", "1"), receivers.of("email", "1")
    ts = {a.notice_id: a.ts_s for a in hooks}
    latencies = [(a.at_s - ts[a.notice_id]) * 1000 for a in (*hooks, *mails)
                 if a.notice_id in ts]
    done = {a.notice_id for a in hooks} & {a.notice_id for a in mails}
    crossing = min(ts.values()) if ts else 0.0
    last = max((a.at_s for a in (*hooks, *mails)), default=crossing)
    result["notices"] = len(ts)
    result["notices_per_s"] = round(len(done) / max(last - crossing, 1e-6), 1)
    result["p99_notice_ms"] = round(percentile(latencies, 0.99), 1)
    result["first_burst_complete"] = len(done) == meters


def _crash_figures(result: dict[str, Any], receivers: Receivers, meters: int,
                   killed_at: int) -> None:
    lost = duplicates = repeats = 0
    for channel in ("webhook", "email"):
        lost += max(0, meters - len({a.notice_id for a in receivers.of(channel, "2")}))
        different, again = count_duplicates(
            [a for a in receivers.arrivals if a.channel == channel])
        duplicates += different
        repeats += again
    result["delivered"] = len(receivers.arrivals)
    result["lost"] = lost
    result["duplicates"] = duplicates
    result["redelivered"] = repeats
    result["killed_with_webhooks_in"] = killed_at


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wattkeeper bench notify")
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=1_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = trio.run(run, args.meters, args.probes)
    verdicts = []
    if result.get("notices_per_s", 0) < 2000:
        verdicts.append(f"notices_per_s {result.get('notices_per_s')} is below 2,000")
    if result.get("lost") or result.get("duplicates"):
        verdicts.append(f"lost {result.get('lost')}, duplicates {result.get('duplicates')}")
    without = result.get("control_p99_decision_ms_without_burst", 0)
    if result.get("control_p99_decision_ms_with_burst", 0) > 2 * max(without, 0.001):
        verdicts.append("control p99 with the burst is more than twice the one without")
    print_result(result, as_json=args.json, verdicts=verdicts)
    return 0
