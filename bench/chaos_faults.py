"""The faults of ``wattkeeper bench chaos``: one injector per kind, each as an operator or a
broken world would do it (docs/bench-chaos.md, "The faults")."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import trio

from bench import chaos_adapt as adapt
from bench.chaos_procs import StartFailed

if TYPE_CHECKING:
    from bench.chaos import Run

GARBLE_VALUES: Final = ("3e38", "flip:29", "flip:26", "flip:22", "-1234.5")
"""kWh shown by a garbled register, in turn: near float32's max, an exponent bit flipped
(x 2^64 for a register of thousands of kWh), another (/ 2^8: backwards), the mantissa's top
bit (a jump of ~2,000 kWh either way), a negative value."""
CORRUPT_BYTES: Final = b"\xc1 garbage where a snapshot was \xc1"
"""0xc1 is never used by msgpack: no decoder can take this for a state."""


async def server_kill(run: Run, _round: int) -> str:
    kill_ns = await run.server.kill()
    ready_ns = await run.start_server("after a planned kill")
    run.planned_windows.append((kill_ns, ready_ns))
    return f"server killed, back in {(ready_ns - kill_ns) / 1e9:.2f} s"

async def writer_kill(run: Run, _round: int) -> str:
    answer = await run.ask("writer")
    pid = int(answer.get("pid") or 0)
    if not pid:
        run.violation(f"no journal writer to kill ({answer})")
        return "no writer"
    run.killed_writers.add(pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return f"writer {pid} was already gone"
    return f"writer {pid} killed"

async def garbled_register(run: Run, number: int) -> str:
    meter = run.pick()
    gateway, unit = run.location[meter]
    value = GARBLE_VALUES[run.faults["garbled_register"] % len(GARBLE_VALUES)]
    seconds = run.args.garble_polls * run.poll_s + 0.05
    answer = await run.sim.ask("garble", gateway, unit, value, f"{seconds:.3f}")
    return f"{meter} shows {answer['value_kwh']:.6g} kWh for {seconds:.1f} s ({value})"

async def meter_swap(run: Run, number: int) -> str:
    meter = run.pick()
    gateway, unit = run.location[meter]
    swapped = await run.sim.ask("swap", gateway, unit, run.args.swap_kwh)
    final_wh, start_wh = int(swapped["final_wh"]), int(swapped["start_wh"])
    run.swaps.setdefault(meter, []).append((final_wh, start_wh))
    answer = await run.ask("replace", meter=meter, ref=f"chaos-swap-{number}",
                            start_wh=start_wh, final_wh=final_wh)
    if answer.get("ok"):
        run.swaps_replaced += 1
    else:
        run.violation(f"replace_meter {meter} refused: {answer.get('code')} "
                       f"{answer.get('message', '')}")
    return f"{meter} swapped ({final_wh} -> {start_wh} Wh), replace_meter {answer.get('ok')}"

async def clock_step(run: Run, _round: int) -> str:
    delta = run.args.clock_step_ms * (1 if run.clock_steps % 2 == 0 else -1)
    run.clock_steps += 1
    answer = await run.ask("step", delta_ms=delta)
    if answer.get("ok"):
        run.server.wall_offset_ms += delta
    return f"wall clock {delta:+d} ms ({'ok' if answer.get('ok') else answer})"

async def gateway_down(run: Run, _round: int) -> str:
    gateway = run.down_gateway
    await run.sim.ask("down", gateway, f"{run.args.down_s:.3f}")
    return f"{gateway} down for {run.args.down_s:.1f} s"

async def corrupt_snapshot(run: Run, number: int) -> str:
    meter = run.pick()
    stop_ns = await run.server.stop()
    original = adapt.read_snapshot(run.data_dir, meter)
    if original is None:
        run.violation(f"{meter} had no snapshot after a clean stop")
        original = b""
    adapt.write_snapshot(run.data_dir, meter, CORRUPT_BYTES)
    outcome = "came up faulted alone"
    try:
        generation = await run.server.start()
    except StartFailed as error:
        run.violation(f"one corrupt snapshot ({meter}) stopped the park from starting: "
                       f"{error}")
        run.planned_windows.append((stop_ns, time.monotonic_ns()))
        adapt.write_snapshot(run.data_dir, meter, original)
        run.planned_windows.append((time.monotonic_ns(),
                                     await run.start_server("after restoring")))
        run.restores += 1
        return f"{meter} corrupt: the park did not start; restored, restarted"
    run.planned_windows.append((stop_ns, generation.ready_ns))
    faulted = list(generation.ready.get("faulted", []))
    if faulted == [meter]:
        run.quarantine_ok += 1
    else:
        outcome = f"faulted at start: {faulted[:5]}"
        run.violation(f"corrupt snapshot of {meter}: faulted at start {faulted[:5]} "
                       f"(expected exactly [{meter}])")
    # A payment for the faulted meter must be taken and applied once it is back.
    for attempt in range(2):
        reference = f"q{number}-{attempt}"
        await run.top_up(reference, meter, 1000, run.rng)
        answers = [a for a in run.attempts if a.reference == reference]
        if faulted == [meter] and not any(a.status == "pending" for a in answers):
            run.violation(f"top-up {reference} for faulted {meter} was answered "
                           f"{answers[-1].outcome} {answers[-1].code or answers[-1].status}"
                           f" (expected pending)")
    await trio.sleep(run.args.quarantine_s)  # random top-ups meet it meanwhile
    run.restores += 1
    live = run.restores % 2 == 0
    if live:
        answer = await run.ask("restore", meter=meter, hex=original.hex())
        if not answer.get("ok"):
            run.violation(f"live restore of {meter} failed: {answer}")
            live = False
    if not live:
        stop_ns = await run.server.stop()
        adapt.write_snapshot(run.data_dir, meter, original)
        run.planned_windows.append((stop_ns, await run.start_server("after restoring")))
    state = await run.ask("state")
    if meter in state.get("faulted", []):
        run.violation(f"{meter} is still faulted after its snapshot was restored")
    return f"{meter} corrupt: {outcome}; restored ({'reset' if live else 'restart'})"


INJECTORS: Final[dict[str, Callable[[Run, int], Awaitable[str]]]] = {
    "server_kill": server_kill,
    "writer_kill": writer_kill,
    "garbled_register": garbled_register,
    "meter_swap": meter_swap,
    "clock_step": clock_step,
    "gateway_down": gateway_down,
    "corrupt_snapshot": corrupt_snapshot,
}
