"""A simulated park in a thread of its own (for clients that are not trio, such as pymodbus)."""

from __future__ import annotations

import threading
from types import TracebackType

import trio

from simulators.park import ParkPlan, SimPark, open_sim_park


class SimParkThread:
    """``with SimParkThread(plan) as park:`` runs the park under ``trio.run`` in a thread."""

    def __init__(self, plan: ParkPlan) -> None:
        self._plan = plan
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="sim-park", daemon=True)
        self._park: SimPark | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as error:  # handed to the test thread in __enter__/__exit__
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        async with open_sim_park(self._plan) as park:
            self._park = park
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> SimPark:
        self._thread.start()
        if not self._ready.wait(10) or self._park is None:
            raise RuntimeError(f"simulated park did not start: {self._error!r}")
        return self._park

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._stop is not None and self._token is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)
        if self._error is not None:
            raise self._error
