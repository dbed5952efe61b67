"""The dispatcher keeps actor semantics: per-actor order, one at a time, failures isolated."""

from __future__ import annotations

import gc
import time

import pytest
import trio

from actors.runtime import Actor, Dispatcher, Reply, Request


class RecordingActor:
    def __init__(self, name: str, log: list[tuple[str, object]]) -> None:
        self.name = name
        self.log = log
        self.busy = False

    def receive(self, message: object) -> None:
        assert not self.busy, "two messages at once"
        self.busy = True
        try:
            if message == "boom":
                raise RuntimeError("boom")
            if isinstance(message, Request):
                message.reply.set(("done", message.message))
                return
            self.log.append((self.name, message))
        finally:
            self.busy = False


async def test_messages_arrive_in_order_per_actor() -> None:
    log: list[tuple[str, object]] = []
    failures: list[tuple[Actor, object, Exception]] = []
    dispatcher = Dispatcher(lambda actor, message, error: failures.append((actor, message, error)))
    a, b = RecordingActor("a", log), RecordingActor("b", log)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        for n in range(1000):
            dispatcher.send_nowait(a, n)
            dispatcher.send_nowait(b, -n)
        while dispatcher.queue_depth:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert [m for name, m in log if name == "a"] == list(range(1000))
    assert [m for name, m in log if name == "b"] == [-n for n in range(1000)]
    assert not failures


async def test_a_failing_actor_does_not_disturb_others() -> None:
    log: list[tuple[str, object]] = []
    failures: list[tuple[Actor, object, Exception]] = []
    dispatcher = Dispatcher(lambda actor, message, error: failures.append((actor, message, error)))
    bad, good = RecordingActor("bad", log), RecordingActor("good", log)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        dispatcher.send_nowait(good, 1)
        dispatcher.send_nowait(bad, "boom")
        dispatcher.send_nowait(good, 2)
        dispatcher.send_nowait(bad, 3)
        while dispatcher.queue_depth:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert log == [("good", 1), ("good", 2), ("bad", 3)]
    assert len(failures) == 1
    actor, message, error = failures[0]
    assert actor is bad and message == "boom" and isinstance(error, RuntimeError)
    assert dispatcher.statistics().failures == 1


async def test_a_failing_failure_handler_does_not_stop_the_dispatcher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[tuple[str, object]] = []

    def broken_supervisor(actor: Actor, message: object, error: Exception) -> None:
        raise RuntimeError("supervisor bug")

    dispatcher = Dispatcher(broken_supervisor)
    bad, good = RecordingActor("bad", log), RecordingActor("good", log)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        dispatcher.send_nowait(bad, "boom")
        dispatcher.send_nowait(good, 1)
        while dispatcher.queue_depth:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert log == [("good", 1)]
    assert "failure handler failed" in caplog.text


async def test_a_batch_keeps_order_with_single_messages_and_isolates_failures() -> None:
    log: list[tuple[str, object]] = []
    failures: list[tuple[Actor, object, Exception]] = []
    dispatcher = Dispatcher(lambda actor, message, error: failures.append((actor, message, error)))
    a, b = RecordingActor("a", log), RecordingActor("b", log)
    dispatcher.send_nowait(a, 1)
    assert dispatcher.offer_batch([a, b, b, a], [2, "boom", 3, 4], max_depth=100)
    dispatcher.send_nowait(a, 5)
    assert dispatcher.queue_depth == 6  # messages, not queue entries
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        while dispatcher.queue_depth:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert log == [("a", 1), ("a", 2), ("b", 3), ("a", 4), ("a", 5)]
    assert [(actor, message) for actor, message, _ in failures] == [(b, "boom")]
    stats = dispatcher.statistics()
    assert (stats.messages, stats.failures, stats.queue_depth) == (6, 1, 0)


def test_a_batch_is_refused_whole_when_the_queue_is_deep() -> None:
    dispatcher = Dispatcher(lambda actor, message, error: None)
    actor = RecordingActor("a", [])
    assert dispatcher.offer_batch([], [], max_depth=3) and dispatcher.queue_depth == 0
    assert dispatcher.offer_batch([actor] * 3, [0, 1, 2], max_depth=3)
    assert not dispatcher.offer_batch([actor], [9], max_depth=3)
    with pytest.raises(ValueError, match="2 actors for 1 messages"):
        dispatcher.offer_batch([actor, actor], [9], max_depth=99)
    assert dispatcher.queue_depth == 3
    assert not dispatcher.offer(actor, 9, max_depth=3)  # a batch counts by its size
    assert dispatcher.drain_slice() == 1  # one entry, three messages
    assert dispatcher.queue_depth == 0 and dispatcher.statistics().messages == 3


async def test_request_reply_round_trip() -> None:
    dispatcher = Dispatcher(lambda actor, message, error: None)
    actor = RecordingActor("a", [])
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        reply = Reply()
        dispatcher.send_nowait(actor, Request("ping", reply))
        assert await reply.wait() == ("done", "ping")
        nursery.cancel_scope.cancel()


async def test_failed_reply_raises_for_the_waiter() -> None:
    reply = Reply()
    reply.fail(ValueError("no"))
    reply.set("ignored: a reply is answered once")
    with pytest.raises(ValueError, match="no"):
        await reply.wait()


class SlowActor:
    def receive(self, message: object) -> None:
        end = time.perf_counter() + 0.0002
        while time.perf_counter() < end:
            pass


async def test_dispatcher_yields_to_other_tasks_within_a_slice() -> None:
    """A deep queue must not starve the rest of the loop: slices are ~1 ms."""
    dispatcher = Dispatcher(lambda actor, message, error: None, slice_s=0.001, check_every=1)
    actor = SlowActor()
    gaps: list[float] = []
    gc.collect()  # a collection of earlier tests' garbage is not what this test measures
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        for _ in range(200):  # ~40 ms of work
            dispatcher.send_nowait(actor, None)

        async def heartbeat() -> None:
            while dispatcher.queue_depth:
                before = time.perf_counter()
                await trio.lowlevel.checkpoint()
                gaps.append(time.perf_counter() - before)

        nursery.start_soon(heartbeat)
        while dispatcher.queue_depth:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert gaps, "the heartbeat never ran while the queue was deep"
    # One slice is 1 ms plus at most one message; allow generous scheduling noise on CI.
    assert max(gaps) < 0.025
    assert dispatcher.statistics().slices > 10
