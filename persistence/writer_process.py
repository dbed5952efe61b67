"""The journal writer process: LMDB write transactions, away from the control loop's GIL.

Theory of operation
-------------------
Started by ``persistence.writer_link`` as ``python -m persistence.writer_process`` with the data
directory and map sizes on the command line, its stdin and stdout are pipes to the server. It
opens the LMDB environment the server already opened (LMDB is multi-process; the server keeps
the data directory's ``flock``, and passes the locked descriptor down so the lock is held until
*both* processes are gone), then loops::

    read every request already in the pipe (never blocking) -> if there is work: one
    transaction (persistence.writer), its result down stdout -> else wait for input

so whatever arrives while a transaction is being flushed goes into the next one: group commit
across the process boundary. With nothing queued it goes on writing the index backlog
(``persistence.index``) in chunks, checking the pipe between them. Stdin at end-of-file means
the server closed the journal: the queued work is written (an index backlog is left for the
next start), then the process exits 0.

Frames both ways are a 4-byte big-endian length and a msgpack array (``frame``). Requests
(several per frame)::

    [RECORD, token, meter_id, reference_utf8, encoded_entry]
    [OUTCOME, seq, reference, balance_after]
    [BACKGROUND, "snapshots" | "history", items]
    [MARKER, token]

Replies: ``[READY, last_seq, counters]`` once at start; per transaction ``[RESULT, committed
[[token, seq]...], duplicates [[token, first_seq, raw_entry, outcome]...], failed [[token,
message]...], outcomes [[reference, outcome]...], markers [token...], dropped, counters]``;
``[BROKEN, message]`` before exiting on an error (a disk error, a bug); for a disk error the
message is the operator's (``store.write_failed_message``: the path, the free bytes, what to do).
The server restarts a writer that exited (``persistence.writer_link``), so exiting is how this
process recovers from an LMDB environment left in doubt by a failed commit.

A writer does not start on a filesystem with less than ``MIN_FREE_BYTES`` free: it would be
READY and then die on the first commit, and the server would flap between "storage is back"
and "storage is down" on every money command. Refusing to start keeps a full disk one steady
outage (with the free bytes in its message) until space is freed. ``SIGXFSZ`` is ignored, so a
file-size limit (``ulimit -f``, systemd ``LimitFSIZE=``) is an I/O error reported like a full
disk rather than a silent kill.

If the server dies, the kernel kills this process too (``PR_SET_PDEATHSIG``): a writer
outliving its server could commit journal entries behind the back of the next server on the
same directory. Work queued but not committed dies with it; none of it was acknowledged.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import lmdb
import msgpack

from persistence.store import (
    StoreError,
    free_bytes,
    free_space,
    open_store,
    write_failed_message,
)
from persistence.writer import Background, BatchResult, RecordRequest, Writer

RECORD: Final = 0
OUTCOME: Final = 1
BACKGROUND: Final = 2
MARKER: Final = 3

READY: Final = 0
RESULT: Final = 1
BROKEN: Final = 2

_HEADER: Final = 4
MIN_FREE_BYTES: Final = 1 << 20
"""Below this, a writer refuses to start (see the module docstring); a money commit needs a
few pages, a snapshot chunk some hundreds of KiB."""
_PR_SET_PDEATHSIG: Final = 1

log = logging.getLogger("persistence.writer_process")


def frame(payload: Any) -> bytes:
    body: bytes = msgpack.packb(payload, use_bin_type=True)
    return len(body).to_bytes(_HEADER, "big") + body


class FrameReader:
    """Splits a byte stream into decoded frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> Iterator[Any]:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER:
            size = int.from_bytes(buffer[start : start + _HEADER], "big")
            end = start + _HEADER + size
            if end > len(buffer):
                break
            yield msgpack.unpackb(buffer[start + _HEADER : end], raw=False)
            start = end
        del buffer[:start]


def result_frame(result: BatchResult, writer: Writer) -> bytes:
    committed = [[request.token, request.seq] for request in result.committed]
    duplicates = []
    failed = []
    for request in result.settled:
        if request.first is not None:
            duplicates.append([request.token, *request.first])
        else:
            failed.append([request.token, str(request.error)])
    return frame([RESULT, committed, duplicates, failed, result.outcomes, result.markers,
                  result.dropped, attrs.astuple(writer.counters)])


def submit(writer: Writer, message: list[Any]) -> None:
    kind = message[0]
    if kind == RECORD:
        writer.submit_record(RecordRequest(message[1], message[2], message[3], message[4]))
    elif kind == OUTCOME:
        writer.submit_outcome(message[1], message[2], message[3])
    elif kind == BACKGROUND:
        writer.submit_background(Background(message[1], message[2]))
    elif kind == MARKER:
        writer.submit_marker(message[1])
    else:
        raise ValueError(f"unknown writer request {kind!r}")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(writer: Writer, in_fd: int, out_fd: int) -> None:
    reader = FrameReader()
    os.set_blocking(in_fd, False)
    at_eof = False
    while True:
        while not at_eof:
            try:
                data = os.read(in_fd, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                at_eof = True
                break
            for requests in reader.feed(data):
                for message in requests:
                    submit(writer, message)
        if writer.busy or (writer.indexing and not at_eof):
            write_all(out_fd, result_frame(writer.write(writer.take()), writer))
        elif at_eof:
            return  # an index backlog is left to the next start (persistence.index)
        else:
            select.select([in_fd], [], [])


def die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def check_free_space(data_dir: str, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    free = free_bytes(Path(data_dir))
    if free is not None and free < min_free_bytes:
        raise StoreError(
            f"the disk holding the data directory {data_dir} is full "
            f"({free_space(Path(data_dir))}; the journal writer needs {min_free_bytes:,} to "
            f"start): free space there or move data_dir to a larger disk"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--map-size", type=int, required=True)
    parser.add_argument("--max-map-size", type=int, required=True)
    parser.add_argument("--chunk-puts", type=int, default=1000)
    parser.add_argument("--max-records", type=int, default=2000)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--min-free-bytes", type=int, default=MIN_FREE_BYTES)
    parser.add_argument("--days-zone", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="wattkeeper journal writer: %(message)s")
    die_with_parent(args.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop (stdin EOF)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit is an I/O error instead
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        check_free_space(args.data_dir, args.min_free_bytes)
        store = open_store(args.data_dir, map_size=args.map_size,
                           max_map_size=args.max_map_size, lock=False)
        with store:
            stale = store.clear_stale_readers()
            if stale:
                log.info("cleared %d reader slots of dead processes", stale)
            writer = Writer(store, chunk_puts=args.chunk_puts, max_records=args.max_records,
                            days_zone=args.days_zone)
            write_all(out_fd, frame([READY, writer.last_seq, attrs.astuple(writer.counters)]))
            serve(writer, in_fd, out_fd)
    except BaseException as error:
        if isinstance(error, lmdb.Error):  # not from a transaction (those are StoreErrors)
            error = StoreError(write_failed_message(Path(args.data_dir), error))
        if isinstance(error, StoreError):  # a message for the operator: one line is enough
            log.error("%s", error)
            message = str(error)
        else:  # a bug: the traceback is for us
            log.exception("journal writer failed")
            message = f"{type(error).__name__}: {error}"
        with contextlib.suppress(OSError):  # the server may be gone already
            write_all(out_fd, frame([BROKEN, message]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
