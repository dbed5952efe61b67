"""The per-gateway bus actor: polls every unit behind one gateway, relay writes jump the queue.

Theory of operation
-------------------
One :class:`GatewayBus` per gateway, one trio task per bus (:meth:`GatewayBus.run`), never one
per unit: a park of 100k meters behind a few hundred gateways is a few hundred tasks. The task
drives a :class:`~protocols.modbus.client.GatewayConnection` in a loop::

    expire timed-out requests -> start a poll cycle if one is due -> fill the window
    (relay commands first, then due retries, then the cycle's polls) -> one send_all ->
    wait for a batch of replies, the next deadline, or an interrupt -> handle the batch

so the trio scheduler is entered about twice per *batch* of replies rather than per request,
and a reply completes its poll by a dict pop and a method call (no per-request task, event or
future). Readings are converted from registers at this edge (``profile.decode``) and handed to
the :class:`BusListener` synchronously; the listener routes them into meter actors.

Polling. A *cycle* polls every unit once; the next cycle starts ``poll_interval_ms`` after the
previous one started (at once if the cycle overran; ``last_cycle_ms`` says by how much). By
default a cycle is a pipelined burst: up to ``window`` requests in flight, refilled as replies
arrive, which batches best (measured in bench/modbus.py). ``spread=True`` instead releases unit
``i`` at ``i / n`` of the interval, which keeps a serializing gateway's queue short and reading
timestamps evenly spaced.

Back-pressure. Polling must never outrun what the meter actors can apply: a reading the bus
completes but the actors cannot take is CPU spent for nothing, and every request in flight or
reading queued is work that a trip or relay command has to wait behind (Little's law: at a
given rate, latency grows with the work outstanding). So before releasing *new* polls the bus
asks :meth:`BusListener.poll_allowance` how many request slots it may fill (at most its free
window). Zero means held: the bus releases no new poll and does not wake up for the cycle's
schedule, but keeps serving what it already started — replies in flight, the rest of a read
plan, retries, early polls, relay commands and their read-backs — so nothing is abandoned and
control never waits. When the park has caught up the listener's owner calls
:meth:`GatewayBus.resume_nowait`, and polling continues where it stopped. Polling thus
self-limits to the rate the actors apply readings, the work outstanding stays bounded, and no
reading is dropped; a cycle simply takes longer (``last_cycle_ms``) when the server is the
bottleneck. (``server.field.RunQueueGate`` is the park-wide policy.)

Early polls. :meth:`GatewayBus.poll_at_nowait` asks for one unit's reading no earlier than a
given time, ahead of the cycle: the field uses it to re-read a meter exactly when its overload
delay runs out, so a trip does not wait for the cycle to come round again (up to a whole
cycle late otherwise). If the unit has a request in flight or a retry pending at that time,
its reply is late enough already and nothing extra is sent; if the unit is still due in the
current cycle, it is simply polled first; otherwise one extra poll, outside the cycle, goes.

Relay commands. :meth:`GatewayBus.command_relay_nowait` queues a coil write (function 5) and
interrupts the task's wait, so the write is sent before any further poll request: at once if
a slot is free (``command_slots`` reserves some for commands), else as soon as the next reply
frees one. After the write is answered the relay is read back at the same address with the
profile's ``relay.function_read`` (1, read coils; or 2, read discrete inputs, for meters that
report the relay's contact there) and :meth:`BusListener.relay_feedback` reports what was
*observed*; deciding what a mismatch means is the meter's policy. A second command for the
same meter that arrives before the first was sent replaces it (last command wins).

Failures. A request with no reply within ``timeout_ms`` is retried ``retries`` times, after a
backoff that doubles per attempt (an offline unit is not retried: it gets one attempt per
cycle, so a dead unit costs the others as little window time as possible). A poll that still
fails, or gets an exception reply, is reported with :meth:`BusListener.poll_failed` and counts
toward ``offline_after`` consecutive failures, after which the unit is reported offline; the
next good reply reports it online again. Garbage on the stream (a ``FrameError`` from the codec
or a reply to no request of ours) is blamed on the oldest request in flight — replies come in
order, so that is the one it was answering — and the connection is dropped and reopened with
jittered exponential backoff. While the gateway is unreachable every unit takes one failed poll
per cycle period, so the whole gateway goes offline after the same threshold, and comes back
unit by unit as the first cycle after reconnecting answers. Nothing here waits on another
gateway: each bus has its own task, stream and timers.
"""

from __future__ import annotations

import heapq
import logging
import math
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import trio

from protocols.modbus.client import (
    PROTOCOL_ERRORS,
    Backoff,
    ConnectionLost,
    GatewayConnection,
    Pipeline,
    RequestPipeline,
)
from protocols.modbus.codec import bit_at
from protocols.modbus.rtu import RtuPipeline

if TYPE_CHECKING:
    from policies.records import Reading
    from protocols.modbus.codec import Response
    from protocols.modbus.profiles import Profile

log = logging.getLogger(__name__)

COMMAND_LATENCIES_KEPT: Final = 4_096


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: the timestamp readings carry."""
    return time.time_ns() // 1_000_000


# --- configuration and the listener ------------------------------------------------------------


@attrs.frozen
class BusGateway:
    """One gateway as the bus sees it (built from the park config by the server)."""

    gateway_id: str
    host: str
    port: int
    poll_interval_ms: int = 1_000
    timeout_ms: int = 1_000
    window: int = 1
    """Requests in flight. Many RS-485 gateways serialize: keep 1..4 unless measured."""
    retries: int = 1
    offline_after: int = 3
    retry_backoff_ms: int = 50
    """First retry delay; doubles per attempt, capped at the poll interval (or timeout)."""
    reconnect_min_ms: int = 100
    reconnect_max_ms: int = 10_000
    spread: bool = False
    command_slots: int = 0
    transport: str = "tcp"
    """"tcp" (Modbus TCP, MBAP) or "rtu-over-tcp" (RTU frames with CRC over the stream: a
    serial converter in transparent mode; always one request at a time)."""
    """Extra in-flight slots only relay commands may use, so a full window of polls does not
    hold a trip back for a round trip. 0 for gateways that serialize (it would gain nothing
    there); 1 for gateways that pipeline."""


@attrs.frozen
class UnitBinding:
    """One meter behind the gateway: its key in the park, Modbus unit, register map, coil."""

    meter_key: int
    unit: int
    profile: Profile
    relay_coil: int


class BusListener(Protocol):
    """Where a bus delivers what it learns (the actor layer routes it to meter actors).

    Called synchronously from the bus task; implementations must not block. ``kind`` of
    ``poll_failed`` is "timeout", "exception" or "garbage".

    ``poll_allowance`` is asked before each batch of new polls with the bus's free window
    (request slots); it returns how many of them the bus may fill now. 0 holds new polls back
    until :meth:`GatewayBus.resume_nowait` is called (see "Back-pressure" in the module
    docstring). A listener with no limit returns ``wanted``.
    """

    def poll_allowance(self, bus: GatewayBus, wanted: int) -> int: ...

    def readings(self, meter_keys: list[int], readings: list[Reading]) -> None:
        """The readings of the polls completed by one burst of replies, in reply order."""

    def connectivity(self, meter_key: int, online: bool, ts_ms: int, detail: str) -> None: ...

    def relay_feedback(self, meter_key: int, closed: bool, ts_ms: int) -> None: ...

    def poll_failed(self, meter_key: int, kind: str, detail: str, ts_ms: int) -> None: ...


@attrs.frozen
class BusStatistics:
    gateway_id: str
    connected: bool
    polls: int
    """Polls completed with a decoded reading."""
    failed_timeout: int
    failed_exception: int
    failed_garbage: int
    late_replies: int
    in_flight: int
    reconnects: int
    cycles: int
    last_cycle_ms: float
    units_offline: int
    commands: int
    commands_pending: int
    p99_command_ms: float
    """Command issued -> write acknowledged by the gateway, over the last 4096 commands."""
    held: bool
    """New polls are held back: the listener allowed none (back-pressure)."""
    holds: int
    """How many times polling was held back since the bus started."""
    internal_errors: int = 0
    """Unexpected exceptions (bugs) the bus survived by reconnecting."""


# --- per-unit and per-command state (private, mutable, slotted: touched on every reply) ----------


class _Unit:
    __slots__ = (
        "attempt",
        "blocks",
        "coil",
        "coil_read",
        "decode",
        "extra",
        "failures",
        "meter_key",
        "next_block",
        "online",
        "plan",
        "prepared",
        "remaining",
        "sent",
        "tids",
        "unit",
    )

    def __init__(self, binding: UnitBinding, pipeline: RequestPipeline[_Token]) -> None:
        self.meter_key = binding.meter_key
        self.unit = binding.unit
        self.coil = binding.relay_coil
        self.coil_read = binding.profile.relay.function_read  # 1 (coils) or 2 (discrete inputs)
        self.plan = tuple(
            (block.function, block.address, block.count) for block in binding.profile.read_plan
        )
        self.prepared = tuple(pipeline.prepare_read(self.unit, *block) for block in self.plan)
        self.decode = binding.profile.decode
        self.blocks: list[bytes] = [b""] * len(self.plan)
        self.tids: list[int] = [-1] * len(self.plan)
        self.next_block = 0
        self.remaining = 0
        self.attempt = 0
        self.sent = False
        self.failures = 0
        self.online = True
        self.extra = False  # the poll in progress is an early one, not the cycle's


class _Command:
    __slots__ = ("attempt", "closed", "issued_at", "reading_back", "sent", "target", "tid")

    def __init__(self, target: _Unit, closed: bool, issued_at: float) -> None:
        self.target = target
        self.closed = closed
        self.issued_at = issued_at
        self.reading_back = False
        self.attempt = 0
        self.sent = False
        self.tid = -1


_Token = _Unit | _Command


# --- the bus ------------------------------------------------------------------------------------


class GatewayBus:
    """See the module docstring. Construct, then ``nursery.start(bus.run)``."""

    def __init__(
        self,
        gateway: BusGateway,
        units: Sequence[UnitBinding],
        listener: BusListener,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        mono_clock: Callable[[], int] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.gateway = gateway
        self._listener = listener
        self._clock = clock
        # The control clock readings are ordered by (server.clock); without one they carry
        # only the wall label (tools, tests).
        self._mono_clock = mono_clock
        self._timeout_s = gateway.timeout_ms / 1000
        self._interval_s = gateway.poll_interval_ms / 1000
        pipeline: RequestPipeline[_Token]
        if gateway.transport == "tcp":
            pipeline = Pipeline(window=gateway.window, timeout_s=self._timeout_s)
        elif gateway.transport == "rtu-over-tcp":
            pipeline = RtuPipeline(timeout_s=self._timeout_s)
            # One request on the wire at a time, commands included (rtu.py).
            gateway = attrs.evolve(gateway, window=1, command_slots=0)
            self.gateway = gateway
        else:
            raise ValueError(
                f"gateway {gateway.gateway_id}: unknown transport {gateway.transport!r}"
            )
        self._connection = GatewayConnection(
            gateway.host, gateway.port, pipeline, connect_timeout_s=self._timeout_s
        )
        self._units = [_Unit(binding, pipeline) for binding in units]
        self._by_key = {unit.meter_key: unit for unit in self._units}
        if len(self._by_key) != len(self._units):
            raise ValueError(f"gateway {gateway.gateway_id}: duplicate meter keys")
        self._backoff = Backoff(
            gateway.reconnect_min_ms / 1000, gateway.reconnect_max_ms / 1000, random
        )
        # A gateway that stops answering altogether (half-open TCP, hung firmware) is detected
        # by this many failed polls in a row with no reply in between, then treated like a
        # dropped connection. One dead unit among live ones never trips it.
        self._silent_limit = max(3, gateway.window)
        self._silent_polls = 0
        self._next_unreachable_at = -math.inf
        self._retry_cap_s = max(self._interval_s, self._timeout_s)

        self._due: deque[_Unit] = deque()
        self._continuing: deque[_Unit] = deque()  # polls whose plan did not fit the window
        self._cycle_active = False
        self._cycle_started = 0.0
        self._cycle_released = 0
        self._next_cycle_at = -math.inf
        self._held = False
        self._holds = 0
        self._busy_units = 0
        self._retries: list[tuple[float, int, _Token]] = []
        self._retry_seq = 0
        self._early: list[tuple[float, int, _Unit]] = []
        self._commands: deque[_Command] = deque()
        self._unsent_commands: dict[int, _Command] = {}

        self._polls = 0
        self._internal_errors = 0
        self._failed = {"timeout": 0, "exception": 0, "garbage": 0}
        self._reconnects = 0
        self._cycles = 0
        self._last_cycle_ms = 0.0
        self._commands_issued = 0
        self._command_ms: deque[float] = deque(maxlen=COMMAND_LATENCIES_KEPT)

    # --- public ------------------------------------------------------------------------------

    def command_relay_nowait(self, meter_key: int, closed: bool) -> None:
        """Queue a relay write for ``meter_key``; it is sent before any further poll request."""
        target = self._by_key.get(meter_key)
        if target is None:
            raise KeyError(f"meter {meter_key} is not on gateway {self.gateway.gateway_id}")
        self._commands_issued += 1
        unsent = self._unsent_commands.get(meter_key)
        if unsent is not None:
            unsent.closed = closed  # last command wins; latency counts from the first
            return
        now = trio.current_time()
        command = _Command(target, closed, now)
        self._unsent_commands[meter_key] = command
        self._commands.append(command)
        connection = self._connection
        if connection.connected:
            # Jump the queue for real: encode and write it from the caller's context rather
            # than when this bus's task next gets the CPU (see GatewayConnection.flush_nowait).
            self._fill_commands(now)
            connection.flush_nowait()
        else:
            connection.interrupt()

    def poll_at_nowait(self, meter_key: int, at: float) -> None:
        """Read ``meter_key`` no earlier than ``at`` (trio time), ahead of the cycle (see
        "Early polls" in the module docstring)."""
        target = self._by_key.get(meter_key)
        if target is None:
            raise KeyError(f"meter {meter_key} is not on gateway {self.gateway.gateway_id}")
        self._retry_seq += 1
        heapq.heappush(self._early, (at, self._retry_seq, target))
        self._connection.interrupt()  # re-read the next wake-up time

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered (or timed out)."""
        return self._connection.pipeline.in_flight

    @property
    def connected(self) -> bool:
        return self._connection.connected

    @property
    def room(self) -> int:
        """Request slots free in the window right now."""
        return self._connection.pipeline.room

    def resume_nowait(self) -> None:
        """The listener's backlog has cleared: release new polls again (no-op if not held)."""
        if self._held:
            self._held = False
            if not self._connection.pipeline.in_flight:
                # Interrupting costs a trio cancellation; a bus with requests in flight wakes
                # for their replies anyway and fills its window then.
                self._connection.interrupt()

    def statistics(self) -> BusStatistics:
        latencies = sorted(self._command_ms)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
        return BusStatistics(
            gateway_id=self.gateway.gateway_id,
            connected=self._connection.connected,
            polls=self._polls,
            failed_timeout=self._failed["timeout"],
            failed_exception=self._failed["exception"],
            failed_garbage=self._failed["garbage"],
            late_replies=self._connection.pipeline.late_replies,
            in_flight=self._connection.pipeline.in_flight,
            reconnects=self._reconnects,
            cycles=self._cycles,
            last_cycle_ms=self._last_cycle_ms,
            units_offline=sum(1 for unit in self._units if not unit.online),
            commands=self._commands_issued,
            commands_pending=len(self._commands),
            p99_command_ms=p99,
            held=self._held,
            holds=self._holds,
            internal_errors=self._internal_errors,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll this gateway forever; ready as soon as the first connection attempt is over."""
        connection = self._connection
        started = False
        try:
            while True:
                detail = ""
                try:
                    await connection.connect()
                except OSError as error:
                    detail = f"gateway unreachable: {error or type(error).__name__}"
                if not started:
                    task_status.started()
                    started = True
                if connection.connected:
                    try:
                        await self._serve()
                    except ConnectionLost as error:
                        detail = str(error)
                    except PROTOCOL_ERRORS as error:
                        detail = f"garbage from gateway: {error}"
                        self._blame_garbage(detail)
                    except Exception as error:
                        # A bug here or in a listener must cost this gateway one reconnect,
                        # never the park: every other bus, and the actors, go on.
                        self._internal_errors += 1
                        log.exception("gateway %s: internal error, reconnecting",
                                      self.gateway.gateway_id)
                        detail = f"internal error: {error!r}"
                    self._abandon_work(await connection.aclose())
                    self._reconnects += 1
                    # Units only count as unreachable once a whole period passes unconnected.
                    self._next_unreachable_at = trio.current_time() + self._unreachable_period()
                await self._wait_to_reconnect(detail)
        finally:
            await connection.aclose()  # shielded: also runs when the bus is cancelled

    # --- connected: the polling loop ------------------------------------------------------------

    async def _serve(self) -> None:
        connection = self._connection
        pipeline = connection.pipeline
        self._silent_polls = 0
        if not self._cycle_active:
            self._next_cycle_at = min(self._next_cycle_at, trio.current_time())
        while True:
            now = trio.current_time()
            if pipeline.next_deadline() <= now:
                self._on_timeouts(pipeline.expire(now), now)
            if not self._cycle_active and now >= self._next_cycle_at:
                self._start_cycle(now)
            if pipeline.room > 0 or self._commands:
                self._fill(now, pipeline.room)
            completions = await connection.exchange(self._wake_at(now))
            if completions:
                self._silent_polls = 0
                self._backoff.reset()
                self._on_completions(completions)

    def _start_cycle(self, now: float) -> None:
        self._cycle_active = True
        self._cycle_started = now
        self._cycle_released = 0
        self._next_cycle_at = now + self._interval_s
        self._due.extend(self._units)
        self._busy_units = len(self._units)
        if not self._units:
            self._end_cycle(now)

    def _end_cycle(self, now: float) -> None:
        self._cycle_active = False
        self._cycles += 1
        self._last_cycle_ms = (now - self._cycle_started) * 1000

    def _release_at(self, index: int) -> float:
        return self._cycle_started + self._interval_s * index / len(self._units)

    def _fill(self, now: float, room: int) -> None:
        if self._commands:
            room -= self._fill_commands(now)
        continuing = self._continuing
        while continuing and room > 0:
            room -= self._send_poll(continuing.popleft(), now, room)
        retries = self._retries
        while retries and room > 0 and retries[0][0] <= now:
            token = heapq.heappop(retries)[2]
            if isinstance(token, _Unit):
                room -= self._send_poll(token, now, room)
            else:
                self._send_command(token, now)
                room -= 1
        early = self._early
        while early and room > 0 and early[0][0] <= now:
            room -= self._send_early(heapq.heappop(early)[2], now, room)
        due = self._due
        if not due or room <= 0 or self._held:
            return
        room = self._listener.poll_allowance(self, room)
        if room <= 0:
            self._held = True
            self._holds += 1
            return
        spread = self.gateway.spread
        while due and room > 0:
            if spread and self._release_at(self._cycle_released) > now:
                break
            self._cycle_released += 1
            unit = due.popleft()
            if unit.extra:  # its early poll is still under way: that one is this cycle's
                unit.extra = False
                continue
            room -= self._send_poll(unit, now, room)

    def _send_early(self, unit: _Unit, now: float, room: int) -> int:
        if unit.sent or unit.attempt or unit.next_block:
            return 0  # in flight or retrying: its reply comes after the time asked for anyway
        if unit in self._due:
            self._due.remove(unit)  # polled first, as this cycle's poll
            self._cycle_released += 1
        else:
            unit.extra = True
        return self._send_poll(unit, now, room)

    def _fill_commands(self, now: float) -> int:
        """Send queued commands while the window (plus command slots) allows; how many went."""
        pipeline = self._connection.pipeline
        commands = self._commands
        room = pipeline.room + self.gateway.command_slots
        sent = 0
        while commands and sent < room:
            self._send_command(commands.popleft(), now)
            sent += 1
        return sent

    def _send_poll(self, unit: _Unit, now: float, room: int) -> int:
        """Send as many of the unit's read blocks as ``room`` allows; how many went.

        Usually the whole read plan goes at once. With a window smaller than the plan (a
        serializing gateway, or RTU where only one request may be on the wire) the rest
        follows block by block as replies free the window, ahead of any new poll.
        """
        send = self._connection.pipeline.send_prepared
        blocks = len(unit.prepared)
        start = unit.next_block
        if start == 0:
            unit.remaining = blocks
            unit.sent = True
            if room >= blocks:
                unit.tids = send(unit, unit.prepared, now)
                return blocks
        end = min(blocks, start + room)
        unit.tids[start:end] = send(unit, unit.prepared[start:end], now)
        if end < blocks:
            unit.next_block = end
            self._continuing.append(unit)
        else:
            unit.next_block = 0
        return end - start

    def _send_command(self, command: _Command, now: float) -> None:
        pipeline = self._connection.pipeline
        target = command.target
        if command.reading_back:
            command.tid = pipeline.send_read(
                command, target.unit, target.coil_read, target.coil, 1, now
            )
        else:
            if self._unsent_commands.get(target.meter_key) is command:
                del self._unsent_commands[target.meter_key]
            command.tid = pipeline.send_write_coil(
                command, target.unit, target.coil, command.closed, now
            )
        command.sent = True

    def _wake_at(self, now: float) -> float:
        wake_at = self._connection.pipeline.next_deadline()
        if not self._cycle_active:
            wake_at = min(wake_at, self._next_cycle_at)
        if self._connection.pipeline.room > 0:
            if self._retries:
                wake_at = min(wake_at, self._retries[0][0])
            if self._early:
                wake_at = min(wake_at, self._early[0][0])
            if self._due and self.gateway.spread and not self._held:
                wake_at = min(wake_at, self._release_at(self._cycle_released))
        return wake_at

    # --- replies ---------------------------------------------------------------------------------

    def _on_completions(self, completions: list[tuple[_Token, Response]]) -> None:
        ts_ms = self._clock()
        mono_ms = -1 if self._mono_clock is None else self._mono_clock()
        keys: list[int] = []
        readings: list[Reading] = []
        for token, response in completions:
            if isinstance(token, _Command):
                self._on_command_reply(token, response, ts_ms)
                continue
            unit = token
            if response.exception:
                self._abandon_poll(unit)
                self._fail_poll(unit, "exception", f"exception code {response.exception}", ts_ms)
                continue
            unit.blocks[unit.tids.index(response.tid)] = response.payload
            unit.remaining -= 1
            if unit.remaining:
                continue
            unit.sent = False
            try:
                reading = unit.decode(unit.blocks, ts_ms, mono_ms)
            except (ValueError, IndexError, struct.error) as error:  # NaN, short payload
                self._fail_poll(unit, "garbage", f"undecodable registers: {error}", ts_ms)
                continue
            keys.append(unit.meter_key)
            readings.append(reading)
            unit.attempt = 0
            unit.failures = 0
            if not unit.online:
                unit.online = True
                self._listener.connectivity(unit.meter_key, True, ts_ms, "")
            if unit.extra:
                unit.extra = False
                continue
            self._busy_units -= 1
            if not self._busy_units and not self._due:
                self._end_cycle(trio.current_time())
        if readings:
            # One hand-over per burst: the actors take them as one run-queue entry.
            self._listener.readings(keys, readings)
            self._polls += len(readings)

    def _on_command_reply(self, command: _Command, response: Response, ts_ms: int) -> None:
        key = command.target.meter_key
        if response.exception:
            step = "read-back" if command.reading_back else "write"
            self._failed["exception"] += 1
            self._listener.poll_failed(
                key, "exception", f"relay {step}: exception code {response.exception}", ts_ms
            )
        if command.reading_back:
            if not response.exception:
                self._listener.relay_feedback(key, bit_at(response.payload, 0), ts_ms)
            return
        if not response.exception:
            self._command_ms.append((trio.current_time() - command.issued_at) * 1000)
        # Read back even after an exception: the meter needs the coil as it really is.
        command.reading_back = True
        command.attempt = 0
        command.sent = False
        self._commands.appendleft(command)

    # --- failures --------------------------------------------------------------------------------

    def _abandon_poll(self, unit: _Unit) -> None:
        pipeline = self._connection.pipeline
        for tid in unit.tids:
            pipeline.abandon(tid)
        unit.sent = False
        if unit.next_block:
            unit.next_block = 0
            self._continuing.remove(unit)

    def _fail_poll(self, unit: _Unit, kind: str, detail: str, ts_ms: int) -> None:
        self._failed[kind] += 1
        unit.attempt = 0
        unit.failures += 1
        listener = self._listener
        listener.poll_failed(unit.meter_key, kind, detail, ts_ms)
        if unit.online and unit.failures >= self.gateway.offline_after:
            unit.online = False
            listener.connectivity(unit.meter_key, False, ts_ms, detail)
        if unit.extra:
            unit.extra = False
            return
        self._busy_units -= 1
        if not self._busy_units and not self._due and self._cycle_active:
            self._end_cycle(trio.current_time())

    def _retry_later(self, token: _Token, attempt: int, now: float) -> None:
        delay = min(self._retry_cap_s, self.gateway.retry_backoff_ms / 1000 * 2 ** (attempt - 1))
        self._retry_seq += 1
        heapq.heappush(self._retries, (now + delay, self._retry_seq, token))

    def _on_timeouts(self, tokens: list[_Token], now: float) -> None:
        if not tokens:
            return
        ts_ms = self._clock()
        retries = self.gateway.retries
        for token in tokens:
            if not token.sent:
                continue  # another request of the same poll already timed out
            if isinstance(token, _Unit):
                self._abandon_poll(token)
                if token.attempt < retries and token.online:
                    token.attempt += 1
                    self._retry_later(token, token.attempt, now)
                else:
                    detail = f"no reply within {self.gateway.timeout_ms} ms"
                    self._fail_poll(token, "timeout", detail, ts_ms)
                    self._silent_polls += 1
            else:
                token.sent = False
                if token.attempt < retries:
                    token.attempt += 1
                    self._retry_later(token, token.attempt, now)
                else:
                    step = "read-back" if token.reading_back else "write"
                    self._failed["timeout"] += 1
                    self._listener.poll_failed(
                        token.target.meter_key, "timeout", f"relay {step}: no reply", ts_ms
                    )
        if self._silent_polls >= self._silent_limit:
            raise ConnectionLost(
                f"{self._silent_polls} polls in a row got no reply: gateway not answering"
            )

    def _blame_garbage(self, detail: str) -> None:
        """Report garbage against the oldest request in flight (the one it was answering)."""
        ts_ms = self._clock()
        token = self._connection.pipeline.oldest()
        if isinstance(token, _Unit):
            self._abandon_poll(token)
            self._fail_poll(token, "garbage", detail, ts_ms)
        elif isinstance(token, _Command):
            self._failed["garbage"] += 1
            self._listener.poll_failed(token.target.meter_key, "garbage", detail, ts_ms)
        else:
            self._failed["garbage"] += 1  # unsolicited: nobody to blame

    def _abandon_work(self, in_flight: list[_Token]) -> None:
        """After a disconnect: relay commands are re-sent first, the cycle resumes where it was.

        Resuming (rather than restarting the cycle) matters for a gateway that keeps
        accepting connections but never answers: every unit still gets its turn to fail.
        """
        waiting = [entry[2] for entry in sorted(self._retries)]
        self._retries.clear()
        units: dict[_Unit, None] = {}  # ordered set: oldest first
        commands: list[_Command] = []
        for token in [*in_flight, *self._continuing, *waiting]:
            if isinstance(token, _Unit):
                if token.extra:  # an early poll is not owed to the cycle: drop it
                    token.extra = False
                    token.sent = False
                    token.attempt = 0
                    token.next_block = 0
                    continue
                units[token] = None
            elif token not in commands:
                commands.append(token)
        self._continuing.clear()
        for unit in reversed(units):
            unit.sent = False
            unit.attempt = 0
            unit.next_block = 0
            self._due.appendleft(unit)
        for command in reversed(commands):
            newer = self._unsent_commands.get(command.target.meter_key)
            if newer is not None and not command.reading_back:
                continue  # a newer command for this meter is queued: that one wins
            command.sent = False
            command.attempt = 0
            self._commands.appendleft(command)

    # --- disconnected -----------------------------------------------------------------------------

    def _unreachable_period(self) -> float:
        return max(self._interval_s, self._timeout_s)

    async def _wait_to_reconnect(self, detail: str) -> None:
        """Sleep the backoff delay; meanwhile every unit takes one failed poll per cycle period."""
        wake_at = trio.current_time() + self._backoff.next_delay()
        while True:
            now = trio.current_time()
            if now >= self._next_unreachable_at:
                self._next_unreachable_at = now + self._unreachable_period()
                self._fail_unreachable(detail)
            if now >= wake_at:
                return
            await trio.sleep_until(min(wake_at, self._next_unreachable_at))

    def _fail_unreachable(self, detail: str) -> None:
        ts_ms = self._clock()
        listener = self._listener
        offline_after = self.gateway.offline_after
        self._failed["timeout"] += len(self._units)
        for unit in self._units:
            unit.failures += 1
            listener.poll_failed(unit.meter_key, "timeout", detail, ts_ms)
            if unit.online and unit.failures >= offline_after:
                unit.online = False
                listener.connectivity(unit.meter_key, False, ts_ms, detail)
        # This period's cycle is over (every unit failed it); a fresh one starts on reconnect.
        for unit in self._units:
            unit.sent = False
            unit.attempt = 0
            unit.next_block = 0
            unit.extra = False
        self._due.clear()
        self._continuing.clear()
        self._busy_units = 0
        if self._cycle_active:
            self._end_cycle(trio.current_time())
