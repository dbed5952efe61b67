"""The park registry: which actor is meter ``M-0001``, and delivery of messages to it.

Meters have a string id (the contract's) and a dense integer key (their index here), which
the Modbus side uses because list indexing is cheaper than hashing strings at poll rate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from actors.effects import EffectRouter
from actors.meter import MeterActor, receive_readings
from actors.runtime import Dispatcher, Reply, Request
from policies.meter_policy import MeterPolicy
from policies.records import MeterState, Reading


class UnknownMeter(LookupError):
    code = "unknown_meter"

    def __init__(self, meter_id: str) -> None:
        super().__init__(f"unknown meter {meter_id!r}")
        self.meter_id = meter_id


class Overloaded(RuntimeError):
    """The run queue is too deep to accept more commands right now; retry shortly."""

    code = "overloaded"


class ParkRegistry:
    def __init__(
        self, dispatcher: Dispatcher, router: EffectRouter, *, max_queue_depth: int = 200_000
    ) -> None:
        self.dispatcher = dispatcher
        self.router = router
        self.max_queue_depth = max_queue_depth
        self._by_key: list[MeterActor] = []
        self._by_id: dict[str, MeterActor] = {}
        self.dropped_readings = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[MeterActor]:
        return iter(self._by_key)

    def add(self, meter_id: str, policy: MeterPolicy, state: MeterState) -> MeterActor:
        if meter_id in self._by_id:
            raise ValueError(f"duplicate meter id {meter_id!r}")
        actor = MeterActor(meter_id, len(self._by_key), policy, state, self.router)
        self._by_key.append(actor)
        self._by_id[meter_id] = actor
        return actor

    def get(self, meter_id: str) -> MeterActor:
        try:
            return self._by_id[meter_id]
        except KeyError:
            raise UnknownMeter(meter_id) from None

    def by_key(self, key: int) -> MeterActor:
        return self._by_key[key]

    def deliver_reading_nowait(self, key: int, reading: Reading) -> None:
        """Readings are droppable under overload: the next one carries the whole register."""
        if not self.dispatcher.offer(self._by_key[key], reading, self.max_queue_depth):
            self.dropped_readings += 1

    def deliver_readings_nowait(self, keys: Sequence[int], readings: Sequence[Reading]) -> None:
        """Several meters' readings as one run-queue entry (``Dispatcher.offer_batch``);
        dropped whole under overload, like single readings."""
        actors = list(map(self._by_key.__getitem__, keys))
        if not self.dispatcher.offer_batch(actors, readings, self.max_queue_depth,
                                           receive_readings):
            self.dropped_readings += len(readings)

    def tell_nowait(self, actor: MeterActor, message: object) -> None:
        self.dispatcher.send_nowait(actor, message)

    def deliver_now(self, actor: MeterActor, message: object) -> None:
        """Apply ``message`` at once, ahead of the mailbox (see ``Dispatcher.deliver_now``)."""
        self.dispatcher.deliver_now(actor, message)

    async def ask(self, actor: MeterActor, message: object) -> object:
        """Send a command and wait for the actor's answer (a ``CommandOutcome``)."""
        if self.dispatcher.queue_depth >= self.max_queue_depth:
            raise Overloaded("the server is overloaded; retry shortly")
        reply = Reply()
        self.dispatcher.send_nowait(actor, Request(message, reply))
        return await reply.wait()
