"""The field's park-wide back-pressure (``server.field.RunQueueGate``), with fake buses."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio

from server.field import RunQueueGate


class FakeDispatcher:
    def __init__(self) -> None:
        self.queue_depth = 0


class FakeBus:
    def __init__(self, name: str, window: int = 8) -> None:
        self.name = name
        self.window = window
        self.in_flight = 0
        self.resumed = 0
        self.connected = True

    @property
    def room(self) -> int:
        return self.window - self.in_flight

    def resume_nowait(self) -> None:
        self.resumed += 1

    def ask(self, gate: RunQueueGate) -> int:
        granted = gate.poll_allowance(cast(Any, self), self.room)
        self.in_flight += granted
        return granted


def test_the_budget_is_shared_and_counted_at_once() -> None:
    dispatcher = FakeDispatcher()
    gate = RunQueueGate(cast(Any, dispatcher), budget=10, resume_at=4)
    a, b = FakeBus("a"), FakeBus("b")
    assert a.ask(gate) == 8
    assert b.ask(gate) == 2  # only what is left, though its window has room for 8
    assert gate.outstanding == 10
    dispatcher.queue_depth = 3  # readings waiting for the actors count too
    a.in_flight = 0  # its replies arrived (and were queued)
    assert a.ask(gate) == 5


async def test_held_buses_resume_in_order_once_the_work_drains() -> None:
    dispatcher = FakeDispatcher()
    gate = RunQueueGate(cast(Any, dispatcher), budget=10, resume_at=4)
    a, b, c = FakeBus("a"), FakeBus("b"), FakeBus("c")
    buses = cast(Any, [a, b, c])
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.run, buses)
        assert a.ask(gate) == 8 and b.ask(gate) == 2
        assert c.ask(gate) == 0  # held: joins the queue
        assert b.ask(gate) == 0  # held too, behind c, though it could have used a slot
        await trio.sleep(0.01)
        assert a.resumed == b.resumed == c.resumed == 0  # 10 outstanding > resume_at
        a.in_flight = 0
        b.in_flight = 0
        dispatcher.queue_depth = 4
        with trio.fail_after(1):
            while not c.resumed:
                await trio.sleep(0.001)
        # c first (FIFO), with slots reserved for it: all 6 that are free, so b waits on.
        assert b.resumed == 0
        assert a.ask(gate) == 0  # a newcomer queues behind the waiting b
        assert c.ask(gate) == 6
        c.in_flight = 0
        dispatcher.queue_depth = 0
        with trio.fail_after(1):
            while not (b.resumed and a.resumed):
                await trio.sleep(0.001)
        assert b.ask(gate) == 8  # b's ticket: its whole window
        assert a.ask(gate) == 2  # the rest
        nursery.cancel_scope.cancel()


def test_resume_at_must_be_below_the_budget() -> None:
    with pytest.raises(ValueError, match="resume_at"):
        RunQueueGate(cast(Any, FakeDispatcher()), budget=10, resume_at=10)
