"""A simulated Modbus gateway: one listening port, many unit ids (simulated meters) behind it.

Theory of operation
-------------------
A real RS-485 gateway takes Modbus TCP requests, forwards them one at a time on its serial bus
and sends the replies back in order. :class:`SimGateway` does the same with
:class:`~simulators.meter_model.SimMeter` objects instead of a bus:

* Framing is the codec's sans-I/O :class:`~protocols.modbus.codec.RequestDecoder`. Every batch
  that one ``receive_some`` completes is answered in order and the replies leave in ONE
  ``send_all`` (a pipelining client with a window of 64 gets 64 replies per system call).
  Garbage from a client (a frame that cannot be Modbus) closes that connection only.
* Functions: 3 and 4 read registers (any address range; unmapped registers read 0), 1 and 2
  read coils (the relay coil shows the relay, other coils 0), 5 writes the relay coil. A unit
  nobody simulates gets exception 0x0B (gateway target device failed to respond), as a real
  gateway answers after its serial timeout; other function codes get ILLEGAL_FUNCTION; a count
  outside 1..125 registers / 1..2000 coils or a coil value other than 0xFF00/0x0000 gets
  ILLEGAL_DATA_VALUE; a range past 0xFFFF or a write to a coil that is not the relay gets
  ILLEGAL_DATA_ADDRESS.
* Reply faults per unit (:data:`~simulators.faults.REPLY_FAULTS`): ``silent`` (no reply at all;
  the client's timeout fires), ``slow`` (the reply and, as on a serial bus, every reply queued
  behind it on that connection wait ``delay_s``), ``garbage`` (bytes that are not Modbus
  instead of the reply). ``down`` closes the listening socket and drops every connection until
  :meth:`SimGateway.set_up`; the port number is kept, so clients reconnect to the same address.
* ``transport="rtu-over-tcp"`` makes it a serial-to-Ethernet converter in transparent mode
  instead: requests and replies are RTU frames with their CRC (``protocols.modbus.rtu``) and
  the same handler answers them. A frame with a bad CRC is what a real slave ignores: no
  reply, the buffered bytes are dropped (counted in ``frame_errors``) and the connection
  stays open, as it does on a converter.
* Every accepted coil write is appended to the shared :class:`CoilLog` with
  ``time.monotonic_ns()`` (comparable across processes on one host: benchmarks use it to time
  command -> coil latency) and the simulated time.

CPU: a register read costs a dict lookup, a slice of the meter's packed image (rebuilt once a
simulated second, see ``simulators.meter_model``) and one ``struct.pack``; the per-batch cost of
trio's ``receive_some``/``send_all`` is shared by the whole batch (docs/simulator.md has the
measured polls/s).
"""

from __future__ import annotations

import collections
import errno
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Final

import attrs
import trio

from protocols.modbus.codec import (
    COIL_OFF,
    COIL_ON,
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    READ_COILS,
    READ_DISCRETE_INPUTS,
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    TARGET_FAILED_TO_RESPOND,
    WRITE_SINGLE_COIL,
    FrameError,
    Request,
    RequestDecoder,
    encode_bits_response,
    encode_exception,
    encode_registers_response,
    encode_write_coil_response,
)
from protocols.modbus.rtu import RtuRequestDecoder, rtu_reply
from simulators.clock import SimClock
from simulators.meter_model import SimMeter

__all__ = [
    "GARBAGE_REPLY",
    "TRANSPORTS",
    "CoilLog",
    "CoilWrite",
    "GatewayStatistics",
    "PortInUse",
    "ReplyFault",
    "SimGateway",
]

log = logging.getLogger(__name__)

RECEIVE_SIZE: Final = 65_536
MAX_REGISTERS: Final = 125
MAX_BITS: Final = 2000

GARBAGE_REPLY: Final = b"\xde\xad\xbe\xef\x00\x05\x01\xff\xff\xff\xff"
"""What a ``garbage`` unit sends instead of a reply: protocol id 0xBEEF, so not Modbus TCP
(and, over RTU, function 0xAD with a CRC that does not match)."""

TRANSPORTS: Final = ("tcp", "rtu-over-tcp")


class PortInUse(OSError):
    """The gateway's port is taken; the message names the address."""


@attrs.frozen
class CoilWrite:
    """One accepted coil write (function 5), as the coil log keeps it."""

    monotonic_ns: int
    sim_s: float
    gateway: str
    unit: int
    address: int
    on: bool
    meter_id: str


class CoilLog:
    """Every accepted coil write, oldest first, up to ``maxlen`` (older ones drop off)."""

    __slots__ = ("_entries", "total")

    def __init__(self, maxlen: int = 1_000_000) -> None:
        self._entries: collections.deque[CoilWrite] = collections.deque(maxlen=maxlen)
        self.total = 0

    def append(self, write: CoilWrite) -> None:
        self._entries.append(write)
        self.total += 1

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[CoilWrite]:
        return iter(self._entries)

    def since(self, monotonic_ns: int) -> list[CoilWrite]:
        """Writes stamped at or after ``monotonic_ns``."""
        return [write for write in self._entries if write.monotonic_ns >= monotonic_ns]

    def for_target(self, gateway: str, unit: int | None = None) -> list[CoilWrite]:
        return [
            write
            for write in self._entries
            if write.gateway == gateway and (unit is None or write.unit == unit)
        ]


@attrs.frozen
class ReplyFault:
    """How a unit misbehaves on the wire: ``kind`` is silent, slow or garbage."""

    kind: str
    delay_s: float = 0.0


@attrs.frozen
class GatewayStatistics:
    requests: int
    replies_dropped: int
    connections: int
    connections_open: int
    frame_errors: int
    coil_writes: int
    up: bool


class SimGateway:
    """One simulated gateway (module docstring). Start :meth:`run` with ``nursery.start``."""

    def __init__(
        self,
        gateway_id: str,
        meters: Mapping[int, SimMeter],
        *,
        clock: SimClock,
        coil_log: CoilLog,
        host: str = "127.0.0.1",
        port: int = 0,
        transport: str = "tcp",
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(
                f"gateway {gateway_id}: transport must be one of {', '.join(TRANSPORTS)}, "
                f"got {transport!r}"
            )
        self.gateway_id = gateway_id
        self.transport = transport
        self.meters: dict[int, SimMeter] = dict(meters)
        self.host = host
        self.port = port
        """The port asked for until :meth:`run` has started; then the port actually bound."""
        self.reply_faults: dict[int, ReplyFault] = {}
        self._clock = clock
        self._coil_log = coil_log
        self._up = True
        self._up_event = trio.Event()
        self._up_event.set()
        self._serving: trio.CancelScope | None = None
        self._requests = 0
        self._dropped = 0
        self._connections = 0
        self._open = 0
        self._frame_errors = 0
        self._coil_writes = 0

    # --- control ------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    def set_down(self) -> None:
        """Close the listening port and drop every connection until :meth:`set_up`."""
        if not self._up:
            return
        self._up = False
        self._up_event = trio.Event()
        if self._serving is not None:
            self._serving.cancel()

    def set_up(self) -> None:
        """Listen again on the same port."""
        if self._up:
            return
        self._up = True
        self._up_event.set()

    def statistics(self) -> GatewayStatistics:
        return GatewayStatistics(
            requests=self._requests,
            replies_dropped=self._dropped,
            connections=self._connections,
            connections_open=self._open,
            frame_errors=self._frame_errors,
            coil_writes=self._coil_writes,
            up=self._up,
        )

    # --- serving ------------------------------------------------------------------------------

    async def _open_listeners(self) -> list[trio.SocketListener]:
        try:
            return await trio.open_tcp_listeners(self.port, host=self.host)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"gateway {self.gateway_id}: port {self.port} on {self.host} is already in use"
                ) from None
            raise

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``started`` once listening (``port`` is then the bound one)."""
        listeners = await self._open_listeners()
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        while True:
            with trio.CancelScope() as scope:
                self._serving = scope
                if not self._up:  # went down between binding and serving
                    scope.cancel()
                async with trio.open_nursery() as nursery:
                    # serve_listeners closes the listeners when cancelled: the port is released.
                    await trio.serve_listeners(self._serve_connection, listeners,
                                               handler_nursery=nursery)
            self._serving = None
            await self._up_event.wait()
            listeners = await self._open_listeners()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        self._connections += 1
        self._open += 1
        try:
            async with stream:
                await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: nothing to tell anyone
        finally:
            self._open -= 1

    async def _converse(self, stream: trio.SocketStream) -> None:
        rtu = self.transport == "rtu-over-tcp"
        rtu_decoder = RtuRequestDecoder() if rtu else None
        decoder: RequestDecoder | RtuRequestDecoder = rtu_decoder or RequestDecoder()
        answer = self._answer_rtu if rtu else self._answer
        reply_faults = self.reply_faults
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            try:
                requests = decoder.feed(data)
            except FrameError as error:
                self._frame_errors += 1
                log.info("gateway %s: dropping a client that sent garbage: %s",
                         self.gateway_id, error)
                return
            if rtu_decoder is not None and rtu_decoder.discarded:
                # A slave ignores a frame it cannot check; the master's timeout fires.
                self._frame_errors += rtu_decoder.discarded
                log.info("gateway %s: ignored %d RTU frame(s) with a bad CRC or function",
                         self.gateway_id, rtu_decoder.discarded)
                rtu_decoder.discarded = 0
            if not requests:
                continue
            self._requests += len(requests)
            now = self._clock.now()
            replies: list[bytes] = []
            for request in requests:
                fault = reply_faults.get(request.unit) if reply_faults else None
                if fault is None:
                    replies.append(answer(request, now))
                    continue
                if fault.kind == "silent":
                    self._dropped += 1
                elif fault.kind == "garbage":
                    replies.append(GARBAGE_REPLY)
                else:
                    # A slow unit holds up the bus: what is queued behind it waits too.
                    if replies:
                        await stream.send_all(b"".join(replies))
                        replies = []
                    await trio.sleep(fault.delay_s)
                    now = self._clock.now()
                    replies.append(answer(request, now))
            if replies:
                await stream.send_all(b"".join(replies) if len(replies) > 1 else replies[0])

    def _answer_rtu(self, request: Request, now: float) -> bytes:
        return rtu_reply(self._answer(request, now))

    def _answer(self, request: Request, now: float) -> bytes:
        """The reply frame to one request (module docstring for the exceptions)."""
        tid, unit, function = request.tid, request.unit, request.function
        meter = self.meters.get(unit)
        if meter is None:
            return encode_exception(tid, unit, function, TARGET_FAILED_TO_RESPOND)
        address = request.address
        if function in (READ_INPUT_REGISTERS, READ_HOLDING_REGISTERS):
            count = request.count_or_value
            if not 1 <= count <= MAX_REGISTERS:
                return encode_exception(tid, unit, function, ILLEGAL_DATA_VALUE)
            if address + count > 0x10000:
                return encode_exception(tid, unit, function, ILLEGAL_DATA_ADDRESS)
            return encode_registers_response(
                tid, unit, function, meter.read_registers(function, address, count, now)
            )
        if function in (READ_COILS, READ_DISCRETE_INPUTS):
            count = request.count_or_value
            if not 1 <= count <= MAX_BITS:
                return encode_exception(tid, unit, function, ILLEGAL_DATA_VALUE)
            if address + count > 0x10000:
                return encode_exception(tid, unit, function, ILLEGAL_DATA_ADDRESS)
            return encode_bits_response(tid, unit, function, meter.read_coils(address, count))
        if function == WRITE_SINGLE_COIL:
            value = request.count_or_value
            if value != COIL_ON and value != COIL_OFF:
                return encode_exception(tid, unit, function, ILLEGAL_DATA_VALUE)
            on = value == COIL_ON
            if not meter.write_coil(address, on, now):
                return encode_exception(tid, unit, function, ILLEGAL_DATA_ADDRESS)
            self._coil_writes += 1
            self._coil_log.append(
                CoilWrite(time.monotonic_ns(), now, self.gateway_id, unit, address, on,
                          meter.meter_id)
            )
            return encode_write_coil_response(tid, unit, address, on)
        return encode_exception(tid, unit, function, ILLEGAL_FUNCTION)
