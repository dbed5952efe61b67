"""Reconciliation holds, to the minor unit, for any mix of top-ups, payment callbacks,
consumption across tariff bands and days, adjustments and arrears (hypothesis)."""

from __future__ import annotations

import itertools
from pathlib import Path
from tempfile import TemporaryDirectory

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence.readonly import open_store_readonly
from server.app import open_park
from server.reports import make_report
from tests.reports.books_park import OPERATOR, PAYMENTS, at, books_config, read

METERS = ("M-A1", "M-A2", "M-B1")
STEPS = st.lists(st.one_of(
    st.tuples(st.just("read"), st.sampled_from(METERS), st.integers(1, 900),
              st.integers(0, 900)),
    st.tuples(st.just("topup"), st.sampled_from(METERS), st.integers(1, 50_000)),
    st.tuples(st.just("pay"), st.sampled_from(METERS), st.integers(1, 50_000)),
    st.tuples(st.just("adjust"), st.sampled_from(METERS), st.integers(-5_000, 5_000)),
    st.tuples(st.just("arrears"), st.sampled_from(METERS), st.integers(1, 20_000)),
), min_size=1, max_size=40)


async def play(data_dir: Path, steps: list[tuple[object, ...]]) -> None:
    now = dict.fromkeys(METERS, at(6))
    register = dict.fromkeys(METERS, 1_000_000)
    references = itertools.count()
    async with open_park(books_config(data_dir), with_field=False) as park:
        for meter in METERS:
            await read(park, meter, now[meter], register[meter])
        for kind, meter, *rest in steps:
            assert isinstance(meter, str)
            reference = f"ref-{next(references)}"
            if kind == "read":
                minutes, wh_per_minute = rest
                assert isinstance(minutes, int) and isinstance(wh_per_minute, int)
                now[meter] += minutes * 60_000
                register[meter] += minutes * wh_per_minute
                await read(park, meter, now[meter], register[meter])
            elif kind == "topup":
                await park.operations.top_up(OPERATOR, meter, int(rest[0]), reference)
            elif kind == "pay":
                await park.operations.top_up(PAYMENTS, meter, int(rest[0]), f"wechat:{reference}")
            elif kind == "adjust" and rest[0] != 0:
                await park.ledger.adjust(meter, int(rest[0]), reference, now[meter], "fix")
            elif kind == "arrears":
                await park.ledger.adjust(meter, int(rest[0]), reference, now[meter], "arrears")
        await trio.sleep(0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_any_mix_of_money_and_consumption_reconciles(steps: list[tuple[object, ...]]) -> None:
    with TemporaryDirectory() as directory:
        data = Path(directory) / "park"
        trio.run(play, data, steps)
        with open_store_readonly(data) as store:
            report = make_report("reconciliation", store, books_config(data))
    assert report.totals is not None and report.totals[-1] == "0.00"
    assert all(row[-1] == "0.00" for row in report.rows)
