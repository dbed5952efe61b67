"""The sans-I/O Modbus TCP framing (protocols/modbus/codec.py): bytes in, records out, and back.

Frames are built with the module's own encoders (and, for malformed ones, by hand with
``struct``), fed to the incremental decoders in arbitrary pieces, and compared field by field.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.modbus.codec import (
    COIL_OFF,
    COIL_ON,
    EXCEPTION_BIT,
    GATEWAY_PATH_UNAVAILABLE,
    ILLEGAL_DATA_ADDRESS,
    READ_COILS,
    READ_DISCRETE_INPUTS,
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    TARGET_FAILED_TO_RESPOND,
    WRITE_SINGLE_COIL,
    WRITE_SINGLE_REGISTER,
    FrameError,
    Request,
    RequestDecoder,
    Response,
    ResponseDecoder,
    bit_at,
    encode_bits_response,
    encode_exception,
    encode_read,
    encode_registers_response,
    encode_write_coil,
    encode_write_coil_response,
    float32_at,
    int16_at,
    int32_at,
    pack_bits,
    uint16_at,
    uint32_at,
)


def mbap(tid: int, protocol: int, length: int, unit: int, function: int) -> bytes:
    """An MBAP header and function code, for frames the encoders refuse to build."""
    return struct.pack(">HHHBB", tid, protocol, length, unit, function)


def feed_in_pieces(
    decoder: ResponseDecoder | RequestDecoder, data: bytes, cuts: list[int]
) -> list[Response | Request]:
    """Feed ``data`` split at ``cuts``; every frame decoded, in order."""
    out: list[Response | Request] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out.extend(decoder.feed(data[start:cut]))
        start = cut
    return out


# --- strategies -------------------------------------------------------------------------------

u16 = st.integers(0, 0xFFFF)
units = st.integers(0, 255)


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, Response]:
    """Any reply a gateway can send, and the record it must decode to."""
    tid, unit = draw(u16), draw(units)
    kind = draw(st.sampled_from(["registers", "bits", "coil echo", "exception"]))
    if kind == "registers":
        function = draw(st.sampled_from([READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS]))
        count = draw(st.integers(1, 125))
        data = draw(st.binary(min_size=2 * count, max_size=2 * count))
        frame = encode_registers_response(tid, unit, function, data)
        return frame, Response(tid, unit, function, data)
    if kind == "bits":
        function = draw(st.sampled_from([READ_COILS, READ_DISCRETE_INPUTS]))
        bits = draw(bit_lists)
        frame = encode_bits_response(tid, unit, function, bits)
        return frame, Response(tid, unit, function, pack_bits(bits))
    if kind == "coil echo":
        address, on = draw(u16), draw(st.booleans())
        frame = encode_write_coil_response(tid, unit, address, on)
        payload = struct.pack(">HH", address, COIL_ON if on else COIL_OFF)
        return frame, Response(tid, unit, WRITE_SINGLE_COIL, payload)
    function = draw(st.integers(1, 0x7F))
    code = draw(st.integers(0, 255))
    frame = encode_exception(tid, unit, function, code)
    return frame, Response(tid, unit, function, b"", code)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, Request]:
    """Any request a client sends, and the record a server must decode it to."""
    tid, unit, address = draw(u16), draw(units), draw(u16)
    if draw(st.booleans()):
        on = draw(st.booleans())
        frame = encode_write_coil(tid, unit, address, on)
        return frame, Request(tid, unit, WRITE_SINGLE_COIL, address, COIL_ON if on else COIL_OFF)
    function = draw(st.integers(1, 4))
    count = draw(st.integers(1, 125 if function >= 3 else 2000))
    frame = encode_read(tid, unit, function, address, count)
    return frame, Request(tid, unit, function, address, count)


# Up to 2000 bits, drawn as one integer: a list of 2000 booleans is slow to generate.
bit_lists = st.integers(1, 2000).flatmap(
    lambda n: st.integers(0, 2**n - 1).map(lambda v: [bool(v >> i & 1) for i in range(n)])
)

# Streams of many frames are big examples: fewer of them keep the suite fast.
stream_settings = settings(max_examples=60)
few = settings(max_examples=50)


def cuts_for(data: st.DataObject, size: int) -> list[int]:
    return data.draw(st.lists(st.integers(0, size), max_size=40), label="cuts")


# --- round trips ---------------------------------------------------------------------------------


@stream_settings
@given(frames=st.lists(replies(), min_size=1, max_size=30), data=st.data())
def test_any_split_of_a_reply_stream_decodes_to_the_same_replies(
    frames: list[tuple[bytes, Response]], data: st.DataObject
) -> None:
    stream = b"".join(frame for frame, _ in frames)
    decoder = ResponseDecoder()
    assert feed_in_pieces(decoder, stream, cuts_for(data, len(stream))) == [r for _, r in frames]
    assert decoder.pending == 0


@stream_settings
@given(frames=st.lists(requests(), min_size=1, max_size=30), data=st.data())
def test_any_split_of_a_request_stream_decodes_to_the_same_requests(
    frames: list[tuple[bytes, Request]], data: st.DataObject
) -> None:
    stream = b"".join(frame for frame, _ in frames)
    decoder = RequestDecoder()
    assert feed_in_pieces(decoder, stream, cuts_for(data, len(stream))) == [r for _, r in frames]
    assert decoder.pending == 0


@settings(max_examples=30)
@given(frames=st.lists(replies(), min_size=1, max_size=5))
def test_one_byte_at_a_time_keeps_the_tail_pending(frames: list[tuple[bytes, Response]]) -> None:
    stream = b"".join(frame for frame, _ in frames)
    decoder = ResponseDecoder()
    decoded: list[Response] = []
    for index in range(len(stream)):
        decoded.extend(decoder.feed(stream[index : index + 1]))
        assert decoder.pending < 260  # never more than one incomplete ADU
    assert decoded == [response for _, response in frames]
    assert decoder.pending == 0


def test_pending_counts_the_incomplete_frame() -> None:
    frame = encode_registers_response(7, 1, READ_INPUT_REGISTERS, bytes(8))
    decoder = ResponseDecoder()
    assert decoder.feed(frame + frame[:5]) == [Response(7, 1, READ_INPUT_REGISTERS, bytes(8))]
    assert decoder.pending == 5
    assert decoder.feed(frame[5:]) == [Response(7, 1, READ_INPUT_REGISTERS, bytes(8))]
    assert decoder.pending == 0
    requests_ = RequestDecoder()
    assert requests_.feed(encode_read(1, 1, 4, 0, 74)[:11]) == []
    assert requests_.pending == 11


def test_feed_accepts_bytearray_and_memoryview() -> None:
    # Typed as bytes, but a buffer from recv_into or a memoryview slice must work too.
    frame = encode_write_coil_response(3, 9, 0, True)
    assert ResponseDecoder().feed(bytearray(frame)) == [  # type: ignore[arg-type]
        Response(3, 9, WRITE_SINGLE_COIL, b"\x00\x00\xff\x00")
    ]
    coil_off = memoryview(encode_write_coil(3, 9, 0, False))
    assert RequestDecoder().feed(coil_off) == [  # type: ignore[arg-type]
        Request(3, 9, WRITE_SINGLE_COIL, 0, COIL_OFF)
    ]


def test_encoded_requests_are_the_bytes_the_standard_shows() -> None:
    # Modbus Application Protocol spec: read input registers 0x0048, 2 registers, unit 1.
    assert encode_read(1, 1, READ_INPUT_REGISTERS, 0x0048, 2) == bytes.fromhex(
        "0001 0000 0006 01 04 0048 0002"
    )
    assert encode_write_coil(2, 1, 0, True) == bytes.fromhex("0002 0000 0006 01 05 0000 ff00")
    assert encode_write_coil(2, 1, 0, False) == bytes.fromhex("0002 0000 0006 01 05 0000 0000")
    assert encode_exception(5, 3, READ_INPUT_REGISTERS, TARGET_FAILED_TO_RESPOND) == (
        bytes.fromhex("0005 0000 0003 03 84 0b")
    )
    # The exception bit is set once, even if the caller passed it already.
    assert encode_exception(5, 3, READ_INPUT_REGISTERS | EXCEPTION_BIT, 2)[7] == 0x84


def test_exception_replies_decode_with_the_bit_cleared() -> None:
    stream = encode_exception(1, 2, READ_INPUT_REGISTERS, GATEWAY_PATH_UNAVAILABLE)
    stream += encode_exception(2, 2, WRITE_SINGLE_COIL, ILLEGAL_DATA_ADDRESS)
    assert ResponseDecoder().feed(stream) == [
        Response(1, 2, READ_INPUT_REGISTERS, b"", GATEWAY_PATH_UNAVAILABLE),
        Response(2, 2, WRITE_SINGLE_COIL, b"", ILLEGAL_DATA_ADDRESS),
    ]


@few
@given(bits=st.lists(st.booleans(), max_size=40) | bit_lists)
def test_pack_bits_is_lsb_first_and_bit_at_reads_it_back(bits: list[bool]) -> None:
    packed = pack_bits(bits)
    assert len(packed) == (len(bits) + 7) // 8
    assert [bit_at(packed, index) for index in range(len(bits))] == bits
    # Padding bits in the last byte are zero.
    assert all(not bit_at(packed, index) for index in range(len(bits), 8 * len(packed)))


def test_pack_bits_known_bytes() -> None:
    # Spec example: coils 20..38 = CD 6B 05 -> first coil is the LSB of the first byte.
    bits = [bool(0xCD >> i & 1) for i in range(8)] + [bool(0x6B >> i & 1) for i in range(8)]
    bits += [True, False, True]
    assert pack_bits(bits) == bytes([0xCD, 0x6B, 0x05])


def test_unknown_functions_reach_the_server_so_it_can_refuse_them() -> None:
    # 0x11 report server id: just unit + function (length 2).
    report_id = mbap(9, 0, 2, 1, 0x11)
    # 0x10 write multiple registers: address, count, byte count, data.
    write_many = mbap(10, 0, 11, 1, 0x10) + struct.pack(">HHBHH", 0x20, 2, 4, 1, 2)
    assert RequestDecoder().feed(report_id + write_many) == [
        Request(9, 1, 0x11, 0, 0),
        Request(10, 1, 0x10, 0x20, 2),
    ]
    # Function 6 (write single register) is a fixed 12-byte request like 1..5.
    write_one = mbap(11, 0, 6, 1, WRITE_SINGLE_REGISTER) + struct.pack(">HH", 3, 0xBEEF)
    assert RequestDecoder().feed(write_one) == [Request(11, 1, 6, 3, 0xBEEF)]


# --- encoder argument checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "count"),
    [
        (READ_INPUT_REGISTERS, 0),
        (READ_INPUT_REGISTERS, 126),
        (READ_HOLDING_REGISTERS, 126),
        (READ_COILS, 0),
        (READ_DISCRETE_INPUTS, 2001),
        (WRITE_SINGLE_COIL, 1),
        (0, 1),
    ],
)
def test_encode_read_refuses_what_modbus_does_not_allow(function: int, count: int) -> None:
    with pytest.raises(ValueError):
        encode_read(1, 1, function, 0, count)


@pytest.mark.parametrize("size", [0, 3, 252])
def test_encode_registers_response_refuses_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError, match="register data"):
        encode_registers_response(1, 1, READ_INPUT_REGISTERS, bytes(size))


def test_encode_bits_response_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="bit data"):
        encode_bits_response(1, 1, READ_COILS, [])
    with pytest.raises(ValueError, match="bit data"):
        encode_bits_response(1, 1, READ_COILS, [True] * 2001)
    assert len(encode_bits_response(1, 1, READ_COILS, [True] * 2000)) == 9 + 250


# --- FrameError: replies -------------------------------------------------------------------------

GOOD_REPLY = encode_registers_response(1, 1, READ_INPUT_REGISTERS, bytes(4))

BAD_REPLIES = {
    "protocol id": (mbap(1, 1, 7, 1, 4) + bytes([4]) + bytes(4), "protocol id 1"),
    "length 0": (mbap(1, 0, 0, 1, 4), "MBAP length 0"),
    "length 1": (mbap(1, 0, 1, 1, 4), "MBAP length 1"),
    "length 255": (mbap(1, 0, 255, 1, 4), "MBAP length 255"),
    "register byte count != length - 3": (
        mbap(1, 0, 7, 1, 4) + bytes([6]) + bytes(4),
        "byte count 6 disagrees with length 7",
    ),
    "odd register byte count": (
        mbap(1, 0, 6, 1, 3) + bytes([3]) + bytes(3),
        "byte count 3 disagrees",
    ),
    "coil byte count != length - 3": (
        mbap(1, 0, 4, 1, 1) + bytes([2]) + bytes(1),
        "byte count 2 disagrees",
    ),
    "exception reply too long": (mbap(1, 0, 4, 1, 0x84) + bytes([2, 0]), "exception reply 0x84"),
    "exception reply too short": (mbap(1, 0, 2, 1, 0x84), "exception reply 0x84 with length 2"),
    "exception to function 0": (mbap(1, 0, 3, 1, 0x80) + bytes([1]), "exception reply 0x80"),
    "coil echo not 6": (mbap(1, 0, 4, 1, 5) + bytes(2), "function 5 reply with length 4"),
    "function 0 in a reply": (mbap(1, 0, 2, 1, 0), "function code 0x00 in a reply"),
    "unknown function in a reply": (mbap(1, 0, 2, 1, 0x2B), "function code 0x2b in a reply"),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_response_decoder_raises_frame_error(case: str) -> None:
    frame, message = BAD_REPLIES[case]
    with pytest.raises(FrameError, match=message):
        ResponseDecoder().feed(frame)
    # Behind a good frame, in pieces: the garbage is still found, never resynchronised over.
    decoder = ResponseDecoder()
    with pytest.raises(FrameError, match=message):
        for index in range(0, len(GOOD_REPLY + frame), 3):
            decoder.feed((GOOD_REPLY + frame)[index : index + 3])


@pytest.mark.parametrize("case", ["protocol id", "length 255", "register byte count != length - 3"])
def test_garbage_is_detected_before_the_frame_is_complete(case: str) -> None:
    # The header (and the byte count of a read) is enough: no waiting for bytes that never come.
    frame, message = BAD_REPLIES[case]
    with pytest.raises(FrameError, match=message):
        ResponseDecoder().feed(frame[:9])


# --- FrameError: requests ------------------------------------------------------------------------

BAD_REQUESTS = {
    "protocol id": (mbap(1, 0x1234, 6, 1, 4) + bytes(4), "protocol id 4660"),
    "length 1": (mbap(1, 0, 1, 1, 4), "MBAP length 1"),
    "length 300": (mbap(1, 0, 300, 1, 4), "MBAP length 300"),
    "read with length 8": (mbap(1, 0, 8, 1, 4) + bytes(6), "function 4 request with length 8"),
    "coil write with length 5": (mbap(1, 0, 5, 1, 5) + bytes(3), "function 5 request"),
    "register write with length 7": (mbap(1, 0, 7, 1, 6) + bytes(5), "function 6 request"),
    "function 0": (mbap(1, 0, 6, 1, 0) + bytes(4), "function code 0x00 in a request"),
    "exception bit": (mbap(1, 0, 6, 1, 0x84) + bytes(4), "function code 0x84 in a request"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_request_decoder_raises_frame_error(case: str) -> None:
    frame, message = BAD_REQUESTS[case]
    with pytest.raises(FrameError, match=message):
        RequestDecoder().feed(frame)
    good = encode_read(1, 1, READ_INPUT_REGISTERS, 0, 2)
    decoder = RequestDecoder()
    assert decoder.feed(good) == [Request(1, 1, READ_INPUT_REGISTERS, 0, 2)]
    with pytest.raises(FrameError, match=message):
        decoder.feed(frame)


# --- register helpers ----------------------------------------------------------------------------

finite_float32 = st.floats(width=32, allow_nan=False)


def words(big_endian_value: bytes, word_order: str) -> bytes:
    """A 32-bit value as registers on the wire: each register big-endian, words in order."""
    return big_endian_value if word_order == "big" else big_endian_value[2:] + big_endian_value[:2]


@pytest.mark.parametrize("word_order", ["big", "little"])
@few
@given(value=finite_float32, before=st.integers(0, 5), after=st.integers(0, 5))
def test_float32_at_reads_struct_packed_values(
    word_order: str, value: float, before: int, after: int
) -> None:
    payload = bytes(2 * before) + words(struct.pack(">f", value), word_order) + bytes(2 * after)
    decoded = float32_at(payload, before, word_order)
    assert decoded == value
    assert math.copysign(1.0, decoded) == math.copysign(1.0, value)  # -0.0 stays -0.0


@pytest.mark.parametrize("word_order", ["big", "little"])
@few
@given(value=st.integers(0, 2**32 - 1), before=st.integers(0, 5))
def test_uint32_at_reads_struct_packed_values(word_order: str, value: int, before: int) -> None:
    payload = bytes(2 * before) + words(struct.pack(">I", value), word_order) + b"\xff\xff"
    assert uint32_at(payload, before, word_order) == value


@pytest.mark.parametrize("word_order", ["big", "little"])
@few
@given(value=st.integers(-(2**31), 2**31 - 1), before=st.integers(0, 5))
def test_int32_at_reads_struct_packed_values(word_order: str, value: int, before: int) -> None:
    payload = bytes(2 * before) + words(struct.pack(">i", value), word_order) + b"\xff\xff"
    assert int32_at(payload, before, word_order) == value


def test_word_order_known_registers() -> None:
    # 230.5 V is 0x43668000: big = 4366 8000, little = 8000 4366.
    assert float32_at(bytes.fromhex("43668000"), 0) == 230.5
    assert float32_at(bytes.fromhex("80004366"), 0, "little") == 230.5
    # 0x00012345 = 74565: little order puts the low word 0x2345 first.
    assert uint32_at(bytes.fromhex("23450001"), 0, "little") == 0x00012345
    assert int32_at(bytes.fromhex("fffeffff"), 0, "little") == -2
    assert int32_at(bytes.fromhex("fffffffe"), 0) == -2


def test_float32_at_passes_nan_and_inf_through() -> None:
    # The codec only frames and converts; judging a NaN register is the profile's job.
    assert math.isnan(float32_at(struct.pack(">f", math.nan), 0))
    assert float32_at(words(struct.pack(">f", -math.inf), "little"), 0, "little") == -math.inf


@few
@given(value=st.integers(0, 0xFFFF), before=st.integers(0, 5))
def test_16_bit_helpers(value: int, before: int) -> None:
    payload = bytes(2 * before) + struct.pack(">H", value)
    assert uint16_at(payload, before) == value
    assert int16_at(payload, before) == struct.unpack(">h", struct.pack(">H", value))[0]


def test_helpers_raise_on_a_short_payload() -> None:
    with pytest.raises(struct.error):
        float32_at(bytes(2), 0)
    with pytest.raises(struct.error):
        uint32_at(bytes(6), 2, "little")
    with pytest.raises(struct.error):
        uint16_at(b"", 0)
