"""The simulated gateway over loopback sockets: framing, exceptions, faults, down/up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from protocols.modbus.codec import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    TARGET_FAILED_TO_RESPOND,
    FrameError,
    Response,
    ResponseDecoder,
    encode_read,
    encode_write_coil,
    float32_at,
)
from protocols.modbus.profiles import load_profile
from simulators.faults import parse_fault
from simulators.gateway import GARBAGE_REPLY
from simulators.park import ParkPlan, SimPark, open_sim_park

SDM630 = load_profile("sdm630")


@pytest.fixture
async def park() -> AsyncIterator[SimPark]:
    async with open_sim_park(ParkPlan.uniform(meters=6, gateways=2, port=0)) as park:
        yield park


class Client:
    """A bare test client: raw frames out, decoded replies in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = ResponseDecoder()

    async def send(self, *frames: bytes) -> None:
        await self.stream.send_all(b"".join(frames))

    async def replies(self, count: int, timeout: float = 2.0) -> list[Response]:
        got: list[Response] = []
        with trio.fail_after(timeout):
            while len(got) < count:
                data = await self.stream.receive_some(65_536)
                assert data, "connection closed"
                got.extend(self.decoder.feed(data))
        return got

    async def one(self, frame: bytes) -> Response:
        await self.send(frame)
        (reply,) = await self.replies(1)
        return reply


async def connect(park: SimPark, gateway: str = "gw1") -> Client:
    return Client(await trio.open_tcp_stream("127.0.0.1", park.ports[gateway]))


async def test_ports_are_bound_and_described(park: SimPark) -> None:
    assert all(port > 0 for port in park.ports.values())
    assert len(set(park.ports.values())) == 2
    assert "2 gateways" in park.describe() and "6 meters (6 sdm630)" in park.describe()
    assert park.meter("gw2", 1) is park.meter_by_id("M-0004")
    with pytest.raises(KeyError, match="gw2/9"):
        park.meter("gw2", 9)


async def test_pipelined_requests_are_answered_in_order_in_one_batch(park: SimPark) -> None:
    client = await connect(park)
    frames = [encode_read(tid, 1 + tid % 3, 4, 0, 74) for tid in range(60)]
    await client.send(*frames)
    replies = await client.replies(60)
    assert [r.tid for r in replies] == list(range(60))
    assert [r.unit for r in replies] == [1 + tid % 3 for tid in range(60)]
    reading = SDM630.decode([replies[0].payload], 0)
    assert 225 < reading.voltage_v < 235
    await client.stream.aclose()


async def test_exceptions_per_the_modbus_spec(park: SimPark) -> None:
    client = await connect(park)
    assert (await client.one(encode_read(1, 99, 4, 0, 2))).exception == TARGET_FAILED_TO_RESPOND
    # Function 6 (write single register) is well formed but not served.
    write_register = b"\x00\x02\x00\x00\x00\x06\x01\x06\x00\x00\x00\x01"
    assert (await client.one(write_register)).exception == ILLEGAL_FUNCTION
    too_many = b"\x00\x03\x00\x00\x00\x06\x01\x04\x00\x00\x00\x7e"  # 126 registers
    assert (await client.one(too_many)).exception == ILLEGAL_DATA_VALUE
    past_end = encode_read(4, 1, 4, 0xFFF0, 32)
    assert (await client.one(past_end)).exception == ILLEGAL_DATA_ADDRESS
    not_the_relay = encode_write_coil(5, 1, 7, False)
    assert (await client.one(not_the_relay)).exception == ILLEGAL_DATA_ADDRESS
    bad_coil_value = b"\x00\x06\x00\x00\x00\x06\x01\x05\x00\x00\x12\x34"
    assert (await client.one(bad_coil_value)).exception == ILLEGAL_DATA_VALUE
    # Still a healthy connection.
    assert (await client.one(encode_read(7, 1, 4, 0, 2))).exception == 0
    await client.stream.aclose()


async def test_coil_write_cuts_the_load_and_is_logged(park: SimPark) -> None:
    client = await connect(park, "gw2")
    echo = await client.one(encode_write_coil(1, 2, 0, False))
    assert (echo.exception, echo.payload) == (0, b"\x00\x00\x00\x00")
    coil = await client.one(encode_read(2, 2, 1, 0, 1))
    assert coil.payload == b"\x00"
    block = await client.one(encode_read(3, 2, 4, 0, 74))
    assert float32_at(block.payload, 0x34) == 0.0
    (write,) = park.coil_log
    assert (write.gateway, write.unit, write.address, write.on, write.meter_id) == (
        "gw2", 2, 0, False, "M-0005"
    )
    assert write.monotonic_ns > 0
    await client.one(encode_write_coil(4, 2, 0, True))
    assert (await client.one(encode_read(5, 2, 1, 0, 1))).payload == b"\x01"
    assert [w.on for w in park.coil_log.for_target("gw2", 2)] == [False, True]
    await client.stream.aclose()


async def test_garbage_from_a_client_drops_only_that_connection(park: SimPark) -> None:
    good, bad = await connect(park), await connect(park)
    await bad.stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(2):
        assert await bad.stream.receive_some(100) == b""
    assert (await good.one(encode_read(1, 1, 4, 0, 2))).exception == 0
    assert park.statistics()["gw1"].frame_errors == 1
    await good.stream.aclose()
    await bad.stream.aclose()


async def test_half_frames_are_reassembled(park: SimPark) -> None:
    client = await connect(park)
    frame = encode_read(9, 3, 4, 0x48, 2)
    await client.send(frame[:5])
    await trio.sleep(0.05)
    await client.send(frame[5:])
    (reply,) = await client.replies(1)
    assert reply.tid == 9 and len(reply.payload) == 4
    await client.stream.aclose()


async def test_silent_unit_gets_no_reply_others_still_do(park: SimPark) -> None:
    client = await connect(park)
    park.inject(parse_fault("gw1/2:silent"))
    await trio.sleep(0.02)
    await client.send(encode_read(1, 2, 4, 0, 2), encode_read(2, 1, 4, 0, 2))
    replies = await client.replies(1)
    assert [r.tid for r in replies] == [2]
    with trio.move_on_after(0.2):
        extra = await client.stream.receive_some(100)
        pytest.fail(f"a silent unit answered: {extra!r}")
    assert park.clear("gw1", 2) == 1
    assert (await client.one(encode_read(3, 2, 4, 0, 2))).tid == 3
    await client.stream.aclose()


async def test_garbage_unit_sends_bytes_that_are_not_modbus(park: SimPark) -> None:
    client = await connect(park)
    park.inject(parse_fault("gw1/3:garbage:for=5s"))
    await trio.sleep(0.02)
    await client.send(encode_read(1, 3, 4, 0, 2))
    with trio.fail_after(2):
        data = await client.stream.receive_some(100)
    assert data == GARBAGE_REPLY
    with pytest.raises(FrameError):
        ResponseDecoder().feed(data)
    await client.stream.aclose()


async def test_slow_unit_delays_its_reply_and_those_behind_it(park: SimPark) -> None:
    client = await connect(park)
    park.inject(parse_fault("gw1/1:slow:delay=300ms"))
    await trio.sleep(0.02)
    started = trio.current_time()
    await client.send(encode_read(1, 2, 4, 0, 2), encode_read(2, 1, 4, 0, 2),
                      encode_read(3, 3, 4, 0, 2))
    first = await client.replies(1)
    assert [r.tid for r in first] == [1]
    assert trio.current_time() - started < 0.25
    rest = await client.replies(2)
    assert [r.tid for r in rest] == [2, 3]
    assert trio.current_time() - started >= 0.3
    park.clear()
    await client.stream.aclose()


async def test_overload_fault_has_a_duration(park: SimPark) -> None:
    meter = park.meter("gw1", 3)
    park.inject(parse_fault("gw1/3:overload:power=45kW,at=50ms,for=200ms"))
    assert meter.overload_w is None
    await trio.sleep(0.1)
    assert meter.overload_w == 45_000.0
    assert "1 active fault" in park.describe()
    await trio.sleep(0.25)
    assert meter.overload_w is None
    assert park.active_faults() == []


async def test_a_newer_fault_supersedes_an_older_one_in_its_slot(park: SimPark) -> None:
    meter = park.meter("gw1", 1)
    park.inject(parse_fault("gw1/1:overload:power=40000,for=100ms"))
    await trio.sleep(0.02)
    park.inject(parse_fault("gw1/1:overload:power=50000"))
    await trio.sleep(0.2)  # the first one's end must not undo the second
    assert meter.overload_w == 50_000.0
    park.clear()
    assert meter.overload_w is None


async def test_rollback_and_tamper_targets(park: SimPark) -> None:
    meter = park.meter("gw1", 1)
    park.inject(parse_fault("gw1/1:rollback:to=2"))
    await trio.sleep(0.02)
    assert 2000.0 <= meter.register_wh(park.clock.now()) < 2100.0
    with pytest.raises(ValueError, match="no tamper register"):
        park.inject(parse_fault("gw1/1:tamper"))
    with pytest.raises(ValueError, match="no unit 9"):
        park.inject(parse_fault("gw1/9:silent"))
    with pytest.raises(ValueError, match="no gateway 'gw7'"):
        park.inject(parse_fault("gw7:down"))


async def test_gateway_down_drops_connections_and_comes_back_on_the_same_port(
    park: SimPark,
) -> None:
    port = park.ports["gw1"]
    client = await connect(park)
    other = await connect(park, "gw2")
    park.inject(parse_fault("gw1:down,for=300ms"))
    with trio.fail_after(2):
        while True:  # the connection is dropped: EOF or reset
            try:
                if await client.stream.receive_some(100) == b"":
                    break
            except trio.BrokenResourceError:
                break
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
    assert not park.gateways["gw1"].up
    assert (await other.one(encode_read(1, 1, 4, 0, 2))).exception == 0  # gw2 unaffected
    await trio.sleep(0.4)
    assert park.gateways["gw1"].up and park.ports["gw1"] == port
    again = await connect(park)
    assert (await again.one(encode_read(2, 1, 4, 0, 2))).exception == 0
    for stream in (client.stream, other.stream, again.stream):
        await stream.aclose()


# --- RTU over TCP ---------------------------------------------------------------------------


def rtu_crc_ok(frame: bytes) -> bool:
    """CRC-16/MODBUS computed bit by bit here, independent of protocols.modbus.rtu's table."""
    crc = 0xFFFF
    for byte in frame[:-2]:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc == int.from_bytes(frame[-2:], "little")


async def rtu_exchange(stream: trio.SocketStream, frame: bytes, size: int) -> bytes:
    await stream.send_all(frame)
    reply = b""
    with trio.fail_after(2):
        while len(reply) < size:
            data = await stream.receive_some(256)
            assert data, "connection closed"
            reply += data
    assert len(reply) == size and rtu_crc_ok(reply), reply.hex()
    return reply


async def test_an_rtu_gateway_answers_reads_coil_writes_and_exceptions() -> None:
    from protocols.modbus.rtu import encode_rtu_read, encode_rtu_write_coil

    plan = ParkPlan.uniform(meters=2, port=0, transport="rtu-over-tcp")
    async with open_sim_park(plan) as park:
        gateway = park.gateways["gw1"]
        assert gateway.transport == "rtu-over-tcp"
        stream = await trio.open_tcp_stream("127.0.0.1", park.ports["gw1"])
        async with stream:
            # Voltage of unit 1: unit, function 4, 4 bytes, one float32, CRC.
            reply = await rtu_exchange(stream, encode_rtu_read(1, 4, 0x0000, 2), 9)
            assert reply[:3] == b"\x01\x04\x04"
            assert 200 < float32_at(reply[3:7], 0) < 260
            # A coil write is echoed, and the coil reads back.
            write = encode_rtu_write_coil(2, 0, False)
            assert await rtu_exchange(stream, write, 8) == write
            assert (await rtu_exchange(stream, encode_rtu_read(2, 1, 0, 1), 6))[:4] == (
                b"\x02\x01\x01\x00"
            )
            assert not park.meter("gw1", 2).relay_closed
            # A unit nobody simulates: exception 0x0B, as the converter's serial timeout says.
            reply = await rtu_exchange(stream, encode_rtu_read(9, 4, 0, 2), 5)
            assert reply[:3] == bytes([9, 0x84, TARGET_FAILED_TO_RESPOND])
        assert gateway.statistics().coil_writes == 1
        assert [(w.unit, w.on) for w in park.coil_log] == [(2, False)]


async def test_an_rtu_gateway_ignores_a_bad_crc_and_answers_the_next_frame() -> None:
    """What a serial slave does with a frame it cannot check: no reply, and no hang-up."""
    from protocols.modbus.rtu import encode_rtu_read

    plan = ParkPlan.uniform(meters=1, port=0, transport="rtu-over-tcp")
    async with open_sim_park(plan) as park:
        stream = await trio.open_tcp_stream("127.0.0.1", park.ports["gw1"])
        async with stream:
            good = encode_rtu_read(1, 4, 0x0000, 2)
            await stream.send_all(good[:-1] + bytes([good[-1] ^ 0xFF]))
            with trio.move_on_after(0.3) as quiet:
                await stream.receive_some(256)
            assert quiet.cancelled_caught  # nothing came back, and the connection is open
            assert (await rtu_exchange(stream, good, 9))[:3] == b"\x01\x04\x04"
        statistics = park.gateways["gw1"].statistics()
        assert statistics.frame_errors == 1 and statistics.connections == 1


def test_the_rtu_request_decoder_frames_by_function_code() -> None:
    from protocols.modbus.rtu import RtuRequestDecoder, encode_rtu_read, with_crc

    decoder = RtuRequestDecoder()
    read = encode_rtu_read(7, 3, 0x0010, 4)
    assert decoder.feed(read[:5]) == []  # a frame split over two segments
    (first,) = decoder.feed(read[5:])
    assert (first.unit, first.function, first.address, first.count_or_value) == (7, 3, 16, 4)
    # Function 16 carries a byte count; two frames in one segment; tids count up.
    write_many = with_crc(bytes([7, 16, 0, 1, 0, 2, 4, 0, 1, 0, 2]))
    second, third = decoder.feed(write_many + read)
    assert (second.function, second.address, second.count_or_value) == (16, 1, 2)
    assert (third.function, first.tid, second.tid, third.tid) == (3, 0, 1, 2)
    # An unknown function code cannot be framed: the segment is dropped, the next one parses.
    assert decoder.feed(bytes([7, 0x2B, 1, 2, 3])) == [] and decoder.discarded == 1
    assert len(decoder.feed(read)) == 1


def test_a_gateway_refuses_an_unknown_transport() -> None:
    plan = ParkPlan.uniform(meters=1, port=0, transport="rtu")
    with pytest.raises(ValueError, match="transport must be one of tcp, rtu-over-tcp"):
        SimPark(plan)
