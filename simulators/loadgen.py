"""A lean Modbus TCP load generator: how many polls a second does a simulator answer?

Theory of operation
-------------------
To measure the *server* the client must cost far less per request than the server does. So
the generator does no Modbus work it can avoid:

* every request it will ever send is encoded once, up front: per connection, a ring of
  ``units x read-plan`` frames (unit 1 block 1, unit 1 block 2, ..., unit N block k), with
  transaction ids that simply count; sending "the next n requests" is a slice of that ring;
* it keeps ``window`` requests in flight per connection (one connection per gateway port);
  each time replies arrive it sends exactly as many new requests as replies completed;
* it parses replies only as far as framing needs (the MBAP length) and counts them, plus
  exception replies (function byte with bit 0x80), which it reports separately so a benchmark
  against a wrong unit range is not mistaken for a fast one;
* it runs on plain non-blocking sockets and one ``selectors`` loop in a thread (no event-loop
  machinery per request); :func:`measure_sim_polls_per_s` is the trio face.

A *poll* is one read of every block of the profile's read plan (sdm630: one 74-register read
of function 4), so polls/s = replies/s / blocks per poll.

Run it in a different process from the simulator to measure the simulator alone (the CLI
``python -m simulators.loadgen --ports 5020-5039 --units 100`` does that).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from collections.abc import Sequence
from typing import Final

import attrs
import trio

from protocols.modbus.codec import encode_read
from protocols.modbus.profiles import load_profile

__all__ = ["LoadResult", "main", "measure_polls", "measure_sim_polls_per_s"]

RECEIVE_SIZE: Final = 262_144
FRAME_SIZE: Final = 12
"""Every read request is 12 bytes (MBAP 7 + function, address, count)."""


@attrs.frozen
class LoadResult:
    polls_per_s: float
    replies: int
    exceptions: int
    seconds: float
    connections: int
    window: int


def _request_ring(units: int, plan: Sequence[tuple[int, int, int]], first_unit: int) -> bytes:
    frames = []
    tid = 0
    # At least 65536 frames' worth of tids wrap naturally; the ring length only needs to be a
    # whole number of polls, and long enough that one window fits many times.
    repeats = max(1, 1024 // (units * len(plan)))
    for _ in range(repeats):
        for unit in range(first_unit, first_unit + units):
            for function, address, count in plan:
                frames.append(encode_read(tid & 0xFFFF, unit, function, address, count))
                tid += 1
    return b"".join(frames)


def measure_polls(
    host: str,
    ports: Sequence[int],
    *,
    units_per_port: int,
    profile: str = "sdm630",
    seconds: float = 3.0,
    window: int = 64,
    first_unit: int = 1,
    warmup_s: float = 0.3,
) -> LoadResult:
    """Blocking: poll every port's units 1..N as fast as the server answers (module docstring)."""
    read_plan = load_profile(profile).read_plan
    plan = [(block.function, block.address, block.count) for block in read_plan]
    ring = _request_ring(units_per_port, plan, first_unit)
    ring_frames = len(ring) // FRAME_SIZE
    doubled = ring + ring  # a slice of up to ring_frames frames never needs to wrap
    window = min(window, ring_frames)
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    # Sockets stay blocking: recv after select() readiness does not block, and the sends are a
    # window of 12-byte frames at most, far below the socket buffer.
    positions: dict[socket.socket, int] = {}
    pendings: dict[socket.socket, bytes] = {}
    try:
        for port in ports:
            sock = socket.create_connection((host, port))
            sockets.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(doubled[: window * FRAME_SIZE])
            positions[sock] = window % ring_frames
            pendings[sock] = b""
            selector.register(sock, selectors.EVENT_READ)
        replies = exceptions = 0
        counting_from = time.perf_counter() + warmup_s
        counted_replies = counted_exceptions = 0
        counting = False
        started = counting_from
        deadline = counting_from + seconds
        while True:
            now = time.perf_counter()
            if not counting and now >= counting_from:
                counting = True
                counted_replies, counted_exceptions = replies, exceptions
                started = now
            if now >= deadline:
                break
            for key, _ in selector.select(0.2):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                chunk = ready.recv(RECEIVE_SIZE)
                if not chunk:
                    raise ConnectionError(f"port {ready.getpeername()[1]} closed the connection")
                pending = pendings[ready]
                data = pending + chunk if pending else chunk
                position, completed, end = 0, 0, len(data)
                while end - position >= 8:
                    frame_end = position + 6 + int.from_bytes(data[position + 4 : position + 6])
                    if frame_end > end:
                        break
                    if data[position + 7] & 0x80:
                        exceptions += 1
                    position = frame_end
                    completed += 1
                pendings[ready] = data[position:]
                if completed:
                    replies += completed
                    ring_position = positions[ready]
                    start = ring_position * FRAME_SIZE
                    ready.sendall(doubled[start : start + completed * FRAME_SIZE])
                    positions[ready] = (ring_position + completed) % ring_frames
        elapsed = time.perf_counter() - started
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    counted = replies - counted_replies
    return LoadResult(
        polls_per_s=counted / len(plan) / elapsed,
        replies=counted,
        exceptions=exceptions - counted_exceptions,
        seconds=elapsed,
        connections=len(ports),
        window=window,
    )


async def measure_sim_polls_per_s(
    ports: Sequence[int],
    units_per_port: int,
    profile: str = "sdm630",
    seconds: float = 3.0,
    window: int = 64,
    *,
    host: str = "127.0.0.1",
) -> float:
    """Polls/s the simulator on ``host:ports`` answers (runs :func:`measure_polls` in a thread).

    If the simulator runs in this same process the generator competes with it for the GIL;
    benchmarks run the simulator in a subprocess.
    """
    result = await trio.to_thread.run_sync(
        lambda: measure_polls(
            host,
            ports,
            units_per_port=units_per_port,
            profile=profile,
            seconds=seconds,
            window=window,
        )
    )
    return result.polls_per_s


def _ports(text: str) -> list[int]:
    first, dash, last = text.partition("-")
    if dash:
        return list(range(int(first), int(last) + 1))
    return [int(part) for part in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.loadgen",
        description="Measure how many polls/s a Modbus TCP (simulated) park answers.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", required=True, help="5020-5039 or 5020,5021")
    parser.add_argument("--units", type=int, required=True, help="units 1..N per port")
    parser.add_argument("--profile", default="sdm630")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=64, help="requests in flight per port")
    args = parser.parse_args(argv)
    result = measure_polls(
        args.host,
        _ports(args.ports),
        units_per_port=args.units,
        profile=args.profile,
        seconds=args.seconds,
        window=args.window,
    )
    print(
        f"{result.polls_per_s:,.0f} polls/s ({result.replies:,} replies, "
        f"{result.exceptions:,} exceptions, {result.connections} connections, "
        f"window {result.window}, {result.seconds:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
