"""One client's outbox: order, coalescing, batches, the backlog bound (the rate limit is the
hub's: test_rate.py)."""

from __future__ import annotations

import json

from protocols.ws.outbox import SNAPSHOT_CHUNK, Outbox


def outbox(**kwargs: object) -> Outbox:
    return Outbox(max_backlog_bytes=10_000, **kwargs)  # type: ignore[arg-type]


def test_answers_then_snapshot_then_events_then_updates() -> None:
    box = outbox()
    box.update("M-1", "m1-old")
    box.start_snapshot(iter(["snap-1", "snap-2", "done"]), batch=False)
    box.event("alarm-1")
    box.update("M-1", "m1-new")
    box.answer("ack-1")
    assert box.take() == ["ack-1", "snap-1", "snap-2", "done", "alarm-1", "m1-new"]
    assert box.take() == []
    assert box.backlog_bytes == 0


def test_latest_update_wins_keeping_its_place() -> None:
    box = outbox()
    for value in range(5):
        box.update("M-1", f"m1-{value}")
    box.update("M-2", "m2")
    box.update("M-1", "m1-5")
    assert box.has_work()
    assert box.take() == ["m1-5", "m2"]
    assert not box.has_work() and box.take() == []
    assert (box.offered, box.released) == (7, 2)


def test_a_snapshot_is_taken_a_chunk_at_a_time_and_holds_events_back() -> None:
    box = outbox()
    box.start_snapshot(iter([f"s{n}" for n in range(SNAPSHOT_CHUNK + 3)]), batch=False)
    box.event("alarm")
    box.answer("pong")
    first = box.take()
    assert first[0] == "pong" and len(first) == SNAPSHOT_CHUNK
    assert box.take() == ["s255", "s256", "s257", "s258", "alarm"]


def test_a_new_subscription_drops_what_the_old_one_queued() -> None:
    box = outbox()
    box.event("old-alarm")
    box.update("M-1", "old")
    box.start_snapshot(iter(["done"]), batch=False)
    assert box.take() == ["done"]
    assert box.backlog_bytes == 0


def test_batches_pack_messages_into_bounded_frames() -> None:
    box = outbox(batch_bytes=100)
    box.start_snapshot(iter([]), batch=True)
    messages = [json.dumps({"n": n, "pad": "x" * 20}) for n in range(10)]
    frames = list(box.frames(messages))
    assert 1 < len(frames) < 10
    unpacked = [m for frame in frames for m in json.loads(frame)["messages"]]
    assert unpacked == [json.loads(m) for m in messages]
    assert all(len(frame) <= 100 + 40 for frame in frames)
    plain = outbox()
    assert list(plain.frames(messages)) == messages


def test_a_backlog_past_the_bound_stalls_the_outbox() -> None:
    box = outbox()
    for _ in range(99):
        box.event("x" * 100)
    assert not box.stalled
    box.event("x" * 200)
    assert box.stalled
