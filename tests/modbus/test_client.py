"""The pipelined Modbus TCP client: the sans-I/O pipeline, backoff, and the trio client over TCP.

``FakeGateway`` (also used by test_bus.py) is a small Modbus TCP gateway written independently
of our codec (plain ``struct``), with knobs for the misbehaviour real gateways show: answering
a batch out of order, going silent, answering garbage, unknown units.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

import pytest
import trio

from protocols.modbus.client import (
    Backoff,
    ConnectionLost,
    Pipeline,
    TransactionMismatch,
    open_modbus_tcp,
)
from protocols.modbus.codec import FrameError
from protocols.modbus.rtu import RtuPipeline, crc16

MBAP = struct.Struct(">HHHB")
GATEWAY_TARGET_FAILED = 0x0B


def reply_frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu


def read_registers_pdu(function: int, words: list[int]) -> bytes:
    return struct.pack(f">BB{len(words)}H", function, 2 * len(words), *words)


class FakeUnit:
    def __init__(self) -> None:
        self.registers: dict[int, int] = {}
        self.coils: dict[int, bool] = {}
        self.inputs: dict[int, bool] = {}  # discrete inputs (function 2), e.g. a relay contact
        self.silent = False

    def set_float(self, address: int, value: float) -> None:
        high, low = struct.unpack(">HH", struct.pack(">f", value))
        self.registers[address] = high
        self.registers[address + 1] = low


class FakeGateway:
    """A Modbus TCP gateway on 127.0.0.1 (ephemeral port); see the module docstring."""

    def __init__(self) -> None:
        self.units: dict[int, FakeUnit] = {}
        self.requests: list[tuple[int, int, int]] = []  # (unit, function, address) as received
        self.reorder = False
        self.rtu = False  # RTU frames with CRC over the stream instead of MBAP
        self.silent = False
        self.garbage_once = False
        self.connections = 0
        self.most_frames_at_once = 0  # > window means the client overran its window
        self.port = 0
        self._streams: list[trio.SocketStream] = []

    def unit(self, unit: int) -> FakeUnit:
        return self.units.setdefault(unit, FakeUnit())

    async def start(self, nursery: trio.Nursery, port: int = 0) -> int:
        serve = functools.partial(trio.serve_tcp, self._serve, port, host="127.0.0.1")
        listeners = await nursery.start(serve)
        self.port = listeners[0].socket.getsockname()[1]
        return self.port

    async def drop_connections(self) -> None:
        for stream in self._streams:
            await stream.aclose()

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self._streams.append(stream)
        buffer = b""
        try:
            await self._answer_stream(stream, buffer)
        finally:
            await stream.aclose()

    async def _answer_stream(self, stream: trio.SocketStream, buffer: bytes) -> None:
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
                replies: list[bytes] = []
                while len(buffer) >= (8 if self.rtu else 12):
                    if self.rtu:
                        assert rtu_crc(buffer[:6]) == int.from_bytes(buffer[6:8], "little")
                        tid, unit, pdu, buffer = -1, buffer[0], buffer[1:6], buffer[8:]
                    else:
                        tid, _proto, length, unit = MBAP.unpack_from(buffer)
                        pdu, buffer = buffer[7 : 6 + length], buffer[6 + length :]
                    reply = self._answer(tid, unit, pdu)
                    if reply is not None:
                        replies.append(reply)
                self.most_frames_at_once = max(self.most_frames_at_once, len(replies))
                if self.reorder:
                    replies.reverse()
                if replies:
                    await stream.send_all(b"".join(replies))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    def _frame(self, tid: int, unit: int, pdu: bytes) -> bytes:
        if self.rtu:
            body = bytes([unit]) + pdu
            return body + rtu_crc(body).to_bytes(2, "little")
        return reply_frame(tid, unit, pdu)

    def _answer(self, tid: int, unit_id: int, pdu: bytes) -> bytes | None:
        function, address, value = struct.unpack(">BHH", pdu[:5])
        self.requests.append((unit_id, function, address))
        if self.garbage_once:
            self.garbage_once = False
            return b"\xde\xad\xbe\xef" * 4
        unit = self.units.get(unit_id)
        if unit is None:
            return self._frame(tid, unit_id, bytes([function | 0x80, GATEWAY_TARGET_FAILED]))
        if self.silent or unit.silent:
            return None
        if function in (3, 4):
            words = [unit.registers.get(address + i, 0) for i in range(value)]
            return self._frame(tid, unit_id, read_registers_pdu(function, words))
        if function in (1, 2):
            points = unit.coils if function == 1 else unit.inputs
            bits = sum(1 << i for i in range(value) if points.get(address + i, False))
            nbytes = (value + 7) // 8
            return self._frame(
                tid, unit_id, bytes([function, nbytes]) + bits.to_bytes(nbytes, "little")
            )
        if function == 5:
            unit.coils[address] = value == 0xFF00
            return self._frame(tid, unit_id, pdu[:5])
        return self._frame(tid, unit_id, bytes([function | 0x80, 0x01]))


def rtu_crc(data: bytes) -> int:
    """CRC-16/MODBUS, bit by bit (independent of the table-driven one under test)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


# --- sans-I/O pipeline ------------------------------------------------------------------------


def test_pipeline_matches_out_of_order_replies_by_tid() -> None:
    pipeline: Pipeline[str] = Pipeline(window=4, timeout_s=1.0)
    tids = [pipeline.send_read(f"req{i}", 1, 4, i * 10, 2, now=0.0) for i in range(3)]
    assert pipeline.room == 1
    assert len(pipeline.take_outgoing()) == 3 * 12  # one buffer for one send_all
    replies = [reply_frame(tid, 1, read_registers_pdu(4, [i, i + 1])) for i, tid in enumerate(tids)]
    # All three replies in one chunk, last first, the first split across two feeds.
    stream = replies[2] + replies[1] + replies[0]
    completions = pipeline.feed(stream[:-5]) + pipeline.feed(stream[-5:])
    assert [token for token, _ in completions] == ["req2", "req1", "req0"]
    for token, response in completions:
        i = int(token[-1])
        assert response.exception in (None, 0)
        assert response.payload[-4:] == struct.pack(">HH", i, i + 1)
    assert pipeline.in_flight == 0


def test_pipeline_rejects_replies_to_requests_never_sent() -> None:
    pipeline: Pipeline[str] = Pipeline(window=2, timeout_s=1.0)
    tid = pipeline.send_read("a", 1, 4, 0, 2, now=0.0)
    with pytest.raises(TransactionMismatch):
        pipeline.feed(reply_frame(tid + 7, 1, read_registers_pdu(4, [0, 0])))
    pipeline.reset()
    tid = pipeline.send_read("a", 1, 4, 0, 2, now=0.0)
    with pytest.raises(TransactionMismatch):  # right tid, wrong unit
        pipeline.feed(reply_frame(tid, 9, read_registers_pdu(4, [0, 0])))


def test_pipeline_expires_oldest_first_and_ignores_late_replies() -> None:
    pipeline: Pipeline[str] = Pipeline(window=8, timeout_s=1.0)
    first = pipeline.send_read("first", 1, 4, 0, 2, now=0.0)
    pipeline.send_read("second", 1, 4, 0, 2, now=0.5)
    assert pipeline.next_deadline() == 1.0
    assert pipeline.expire(0.99) == []
    assert pipeline.expire(1.0) == ["first"]
    assert pipeline.next_deadline() == 1.5
    # The gateway answers the expired request after all: dropped, counted, not garbage.
    assert pipeline.feed(reply_frame(first, 1, read_registers_pdu(4, [1, 2]))) == []
    assert pipeline.late_replies == 1
    assert pipeline.expire(2.0) == ["second"]


def test_pipeline_exception_reply_is_a_result() -> None:
    pipeline: Pipeline[str] = Pipeline(window=1, timeout_s=1.0)
    tid = pipeline.send_read("a", 3, 4, 0, 2, now=0.0)
    [(token, response)] = pipeline.feed(reply_frame(tid, 3, bytes([0x84, GATEWAY_TARGET_FAILED])))
    assert token == "a"
    assert response.exception == GATEWAY_TARGET_FAILED


def test_pipeline_tids_wrap_around_and_skip_those_in_flight() -> None:
    pipeline: Pipeline[int] = Pipeline(window=4, timeout_s=1.0)
    seen = set()
    held = pipeline.send_read(-1, 1, 4, 0, 1, now=0.0)
    for i in range(70_000):
        tid = pipeline.send_read(i, 1, 4, 0, 1, now=0.0)
        assert tid != held
        seen.add(tid)
        pipeline.abandon(tid)
    assert len(seen) == 65_535
    pipeline.take_outgoing()


def test_rtu_crc_and_framing() -> None:
    assert crc16(bytes.fromhex("010300000001")) == 0x0A84  # the textbook frame 01 03 .. 84 0A
    assert crc16(b"123456789") == rtu_crc(b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    pipeline: RtuPipeline[str] = RtuPipeline(timeout_s=1.0, quiet_s=0.5)
    [seq] = pipeline.send_prepared("a", (pipeline.prepare_read(7, 4, 0x48, 2),), now=0.0)
    assert pipeline.room == 0
    assert pipeline.take_outgoing() == bytes.fromhex("07040048 0002") + rtu_crc(
        bytes.fromhex("070400480002")
    ).to_bytes(2, "little")
    body = bytes.fromhex("0704 04 41480000")
    reply = body + rtu_crc(body).to_bytes(2, "little")
    assert pipeline.feed(reply[:4]) == []
    [(token, response)] = pipeline.feed(reply[4:])
    assert (token, response.tid, response.payload) == ("a", seq, bytes.fromhex("41480000"))
    pipeline.send_read("b", 7, 4, 0, 2, now=1.0)
    pipeline.take_outgoing()
    with pytest.raises(FrameError):
        pipeline.feed(reply[:-1] + bytes([reply[-1] ^ 0xFF]))


def test_rtu_drains_after_a_timeout_so_a_late_reply_is_not_misread() -> None:
    pipeline: RtuPipeline[str] = RtuPipeline(timeout_s=1.0, quiet_s=0.5)
    pipeline.send_read("slow", 7, 4, 0, 2, now=0.0)
    assert pipeline.expire(1.0) == ["slow"]
    assert pipeline.room == 0 and pipeline.next_deadline() == 1.5
    body = bytes.fromhex("0704 04 41480000")
    assert pipeline.feed(body + rtu_crc(body).to_bytes(2, "little")) == []  # late: dropped
    assert pipeline.late_replies == 1
    assert pipeline.expire(1.5) == []
    assert pipeline.room == 1


def test_backoff_is_exponential_capped_and_jittered_by_the_injected_source() -> None:
    low = Backoff(0.1, 1.0, random=lambda: 0.0)
    assert [round(low.next_delay(), 3) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    high = Backoff(0.1, 1.0, random=lambda: 0.999999)
    assert round(high.next_delay(), 3) == 0.1
    low.reset()
    assert round(low.next_delay(), 3) == 0.05


# --- trio client over loopback TCP --------------------------------------------------------------


async def test_client_pipelines_and_matches_replies_answered_out_of_order() -> None:
    gateway = FakeGateway()
    gateway.reorder = True
    for unit in range(1, 9):
        gateway.unit(unit).registers.update({0: unit, 1: unit * 100})
    results: dict[int, bytes] = {}
    async with trio.open_nursery() as nursery:
        port = await gateway.start(nursery)
        async with open_modbus_tcp("127.0.0.1", port, window=8, timeout_s=2.0) as client:

            async def read(unit: int) -> None:
                response = await client.read(unit, 4, 0, 2)
                results[unit] = response.payload

            async with trio.open_nursery() as readers:
                for unit in range(1, 9):
                    readers.start_soon(read, unit)
            assert client.statistics().requests == 8
        nursery.cancel_scope.cancel()
    assert {unit: payload[-4:] for unit, payload in results.items()} == {
        unit: struct.pack(">HH", unit, unit * 100) for unit in range(1, 9)
    }


async def test_client_surfaces_exceptions_and_recovers_from_garbage() -> None:
    gateway = FakeGateway()
    gateway.unit(1).registers[0] = 42
    async with trio.open_nursery() as nursery:
        port = await gateway.start(nursery)
        backoff = Backoff(0.01, 0.05, random=lambda: 0.0)
        async with open_modbus_tcp(
            "127.0.0.1", port, window=2, timeout_s=1.0, backoff=backoff
        ) as client:
            unknown = await client.read(99, 4, 0, 1)
            assert unknown.exception == GATEWAY_TARGET_FAILED
            gateway.garbage_once = True
            with pytest.raises(ConnectionLost):
                await client.read(1, 4, 0, 1)
            good = await client.read(1, 4, 0, 1)
            assert good.payload[-2:] == struct.pack(">H", 42)
            assert client.statistics().reconnects == 1
            assert gateway.connections == 2
        nursery.cancel_scope.cancel()


async def test_client_times_out_and_retries() -> None:
    gateway = FakeGateway()
    gateway.unit(1).silent = True
    attempts: Callable[[], int] = lambda: len(gateway.requests)  # noqa: E731
    async with trio.open_nursery() as nursery:
        port = await gateway.start(nursery)
        async with open_modbus_tcp("127.0.0.1", port, timeout_s=0.05, retries=2) as client:
            with pytest.raises(Exception, match="no reply"):
                await client.read(1, 4, 0, 1)
            assert attempts() == 3
            assert client.statistics().timeouts == 1
        nursery.cancel_scope.cancel()
