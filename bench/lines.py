"""Newline-delimited commands and answers between a bench and its worker processes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import trio


class LineReader:
    """Whole lines (without the newline) from a byte stream; None at end of stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> bytes | None:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            data = await self._stream.receive_some(1 << 16)
            if not data:
                return None
            self._buffer += data


async def stdin_lines() -> AsyncIterator[bytes]:
    """A worker's commands: each non-blank line of stdin, until the bench closes it."""
    reader = LineReader(trio.lowlevel.FdStream(sys.stdin.fileno()))
    while (line := await reader.readline()) is not None:
        if line.strip():
            yield line
