"""Money commands through the real park: durable, idempotent, and bad input moves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.registry import UnknownMeter
from persistence.entries import ReferenceConflict
from policies.money import MoneyError, parse_positive_amount
from policies.records import Reading, RelayCommand
from server.app import open_park
from server.ledger import BadRequest
from tests.server.parks import small_park

T0 = 1_790_000_000_000


async def test_topup_is_applied_once_and_repeats_get_the_same_ack(tmp_path: Path) -> None:
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        first = await park.ledger.top_up("M-0", 25_00, "pay-1", T0)
        again = await park.ledger.top_up("M-0", 25_00, "pay-1", T0)
        assert first.balance == again.balance == 125_00
        assert again.duplicate and not first.duplicate
        assert park.registry.get("M-0").state.balance == 125_00

    # ... and after a restart the repeat still gets the first acknowledgement.
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        again = await park.ledger.top_up("M-0", 25_00, "pay-1", T0)
        assert again.duplicate and again.balance == 125_00
        assert park.registry.get("M-0").state.balance == 125_00


async def test_concurrent_duplicates_apply_once(tmp_path: Path) -> None:
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        acks = []

        async def pay() -> None:
            acks.append(await park.ledger.top_up("M-1", 10_00, "same-ref", T0))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(pay)
        assert {ack.balance for ack in acks} == {110_00}
        assert sum(not ack.duplicate for ack in acks) == 1
        assert park.registry.get("M-1").state.balance == 110_00


async def test_bad_input_moves_no_money(tmp_path: Path) -> None:
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        with pytest.raises(BadRequest):
            await park.ledger.top_up("M-0", 0, "zero", T0)
        with pytest.raises(BadRequest):
            await park.ledger.top_up("M-0", -5_00, "negative", T0)
        with pytest.raises(BadRequest):
            await park.ledger.top_up("M-0", 5_00, "", T0)
        with pytest.raises(UnknownMeter):
            await park.ledger.top_up("M-404", 5_00, "nobody", T0)
        for text in ("-1.00", "abc", "NaN", "1.001", "1e3", ""):
            with pytest.raises(MoneyError):
                parse_positive_amount(text)
        await park.ledger.top_up("M-0", 5_00, "ok", T0)
        with pytest.raises(ReferenceConflict):
            await park.ledger.top_up("M-0", 6_00, "ok", T0)
        with pytest.raises(ReferenceConflict):
            await park.ledger.top_up("M-1", 5_00, "ok", T0)
        # A reading with NaN power or a negative register is refused by the actor.
        actor = park.registry.get("M-2")
        park.registry.deliver_reading_nowait(actor.key, Reading(T0, 1_000, float("nan")))
        park.registry.deliver_reading_nowait(actor.key, Reading(T0, -1, 10.0))
        while park.dispatcher.queue_depth:
            await trio.sleep(0.001)
        assert park.router.bad_inputs == 2
        balances = {a.meter_id: a.state.balance for a in park.registry}
        assert balances == {"M-0": 105_00, "M-1": 100_00, "M-2": 100_00}


async def test_zero_balance_opens_relay_and_topup_closes_it(tmp_path: Path) -> None:
    commands: list[tuple[str, RelayCommand]] = []
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        park.router.relay_sink = lambda actor, command: commands.append((actor.meter_id, command))
        actor = park.registry.get("M-0")
        park.registry.deliver_reading_nowait(actor.key, Reading(T0, 0, 5_000.0))
        # 100.00 at 1.00/kWh is 100 kWh: 100.5 kWh (21 h at 5 kW) later the balance is -0.50.
        later = T0 + 21 * 3_600_000
        park.registry.deliver_reading_nowait(actor.key, Reading(later, 100_500, 5_000.0))
        while park.dispatcher.queue_depth:
            await trio.sleep(0.001)
        assert actor.state.balance == -50
        assert commands[-1] == ("M-0", RelayCommand(False, "zero_balance", later))
        ack = await park.ledger.top_up("M-0", 10_00, "rescue", later + 1_000)
        assert ack.balance == 9_50
        assert commands[-1][1].closed
        assert actor.state.relay.closed
