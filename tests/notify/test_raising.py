"""Which notices the park raises, read back from the outbox (no delivery process): credit
running out at the present load, a statement ready once a month, a quota group's warning to
every tenant with a meter in it, and nothing at all for a tenant without contacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import trio

from persistence.outbox import notices_after
from policies.notices import Notice
from policies.records import Reading
from server.app import Park, open_park
from server.config import ParkConfig
from tests.notify.parks import T0, notify_park

DEC_2 = 1_796_212_800_000  # 2026-12-02 20:00 in Shanghai


def config_of(tmp_path: Path, extra: str = "", **notify: Any) -> ParkConfig:
    config = notify_park(tmp_path / "park", 2525, "http://127.0.0.1:9/hook", extra=extra)
    return attrs.evolve(config, notify=attrs.evolve(config.notify, **notify))


async def outbox(park: Park) -> list[Notice]:
    assert park.notifier is not None
    await park.notifier.flush(park.journal)
    store = park.store
    assert store.outbox is not None and store.outbox_seq is not None
    with store.read() as txn:
        return [notice for _, notice in notices_after(txn, store.outbox, store.outbox_seq, 0,
                                                      1000)]


async def test_credit_running_out_at_the_present_load_once_a_day(tmp_path: Path) -> None:
    config = config_of(tmp_path, runout_hours=48.0)
    async with open_park(config, with_field=False, with_delivery=False,
                         clock_ms=lambda: T0) as park:
        assert park.notifier is not None
        for key in (0, 2):  # t0 has contacts, t2 has none
            park.registry.deliver_reading_nowait(key, Reading(T0, 1_000_000, 3000.0))
        await trio.sleep(0.05)
        # 100.00 at 3 kW and 1.00 per kWh lasts 33 hours: under 48
        assert park.notifier.scan_runout() == 1
        assert park.notifier.scan_runout() == 0  # once a local day
        [notice] = await outbox(park)
    assert (notice.notice_id, notice.kind, notice.tenant) == (
        "M-0/runout/2026-11-18", "credit_running_out", "t0")
    assert (notice.fields["hours"], notice.fields["balance"]) == ("33", "100.00")


async def test_a_statement_is_ready_once_for_last_month(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    async with open_park(config, with_field=False, with_delivery=False,
                         clock_ms=lambda: DEC_2) as park:
        assert park.notifier is not None
        # The statement clock ran at start (the 2nd of the month: last month's is news)
        assert park.notifier.statements_ready() == 0  # once
        notices = await outbox(park)
    assert sorted(n.notice_id for n in notices) == ["statement/t0/2026-11",
                                                    "statement/t1/2026-11"]
    assert {n.fields["month"] for n in notices} == {"2026-11"}


async def test_mid_month_a_fresh_server_tells_no_statement(tmp_path: Path) -> None:
    async with open_park(config_of(tmp_path), with_field=False, with_delivery=False,
                         clock_ms=lambda: T0) as park:
        assert park.notifier is not None
        assert park.notifier.statements_ready() == 0


QUOTA = """
[[quotas]]
id = "line-1"
name = "Stamping line 1"
meters = ["M-0", "M-1", "M-2"]
budget_kwh = "10"
alarm_percents = [80, 100]
"""


async def test_a_quota_warning_reaches_every_tenant_of_the_group_with_contacts(
        tmp_path: Path) -> None:
    config = config_of(tmp_path, extra=QUOTA)
    async with open_park(config, with_field=False, with_delivery=False,
                         clock_ms=lambda: T0) as park:
        for key in (0, 1, 2):
            park.registry.deliver_reading_nowait(key, Reading(T0, 100_000, 3000.0))
        await trio.sleep(0.05)
        for key in (0, 1, 2):  # 3 x 3 kWh = 9 of 10: past 80 %
            park.registry.deliver_reading_nowait(key, Reading(T0 + 3_600_000, 103_000, 3000.0))
        await trio.sleep(0.1)
        notices = [n for n in await outbox(park) if n.kind == "quota"]
    assert sorted(n.notice_id for n in notices) == ["quota/line-1/2026-11/80/t0",
                                                    "quota/line-1/2026-11/80/t1"]
    assert {(n.fields["group"], n.fields["percent"]) for n in notices} == {("line-1", "80")}
