"""What happens to a notice between its raising and its delivery: a crash of the whole server,
quiet hours, a refused address, a receiver that fails for a while, a cut and its restore."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.notify_sinks import SmtpSink, WebhookSink
from persistence.deliveries import read_deliveries
from policies.records import Reading
from server.app import open_park
from tests.notify.parks import SECRET, T0, notify_park, wait_for

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


@pytest.fixture
def smtp() -> Any:
    sink = SmtpSink(refuse=frozenset({"energy@acme.example"}))
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookSink]:
    sink = WebhookSink(SECRET)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        yield sink
        nursery.cancel_scope.cancel()


def kinds(sink: WebhookSink) -> list[str]:
    return [r.body["kind"] for r in sink.received]  # type: ignore[index]


async def test_a_crash_between_raising_and_delivering_delivers_once_after_restart(
        tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    attempts: list[str] = []

    def unavailable(body: dict[str, Any]) -> int:
        attempts.append(body["id"])
        return 503

    webhook.answer = unavailable
    data_dir = tmp_path / "park"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.notify.crash_park", str(data_dir), str(smtp.port),
         webhook.url()], stdout=subprocess.PIPE)
    assert process.stdout is not None
    with trio.fail_after(30):
        output = b""
        while b"WRITTEN" not in output:
            output += await process.stdout.receive_some()
        await wait_for(lambda: len(attempts) >= 2)  # both tried, both refused for now
    process.send_signal(signal.SIGKILL)
    await process.wait()
    await process.stdout.aclose()
    webhook.answer = lambda body: 200
    config = notify_park(data_dir, smtp.port, webhook.url(), slow_retries=True)
    async with open_park(config, with_field=False, clock_ms=lambda: T0 + 7_200_000):
        await wait_for(lambda: len(webhook.received) >= 2)
        await trio.sleep(1.5)  # time for a duplicate to show up, if there were one
    ids = sorted(r.notice_id for r in webhook.received)
    assert ids == ["M-0/low_balance/1/1", "receipt/pay-crash"]
    receipt = next(r.body for r in webhook.received if r.notice_id == "receipt/pay-crash")
    assert (receipt["amount"], receipt["balance"]) == ("5.00", "105.00")  # type: ignore[index]


def quiet_span_around_now() -> str:
    now = dt.datetime.now(SHANGHAI)
    start = (now - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=1)).strftime("%H:%M")
    return f"{start}-{end}"


async def test_quiet_hours_hold_a_reminder_but_not_a_cut(
        tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    config = notify_park(tmp_path / "park", smtp.port, webhook.url(),
                         quiet=quiet_span_around_now())
    async with open_park(config, with_field=False, clock_ms=lambda: T0) as park:
        park.registry.deliver_reading_nowait(0, Reading(T0, 1_000_000, 3000.0))
        park.registry.deliver_reading_nowait(0, Reading(T0 + 3_600_000, 1_060_000, 3000.0))
        park.registry.deliver_reading_nowait(0, Reading(T0 + 7_200_000, 1_101_000, 3000.0))
        await wait_for(lambda: "supply_cut" in kinds(webhook))
        await trio.sleep(1.0)
        assert kinds(webhook) == ["supply_cut"]  # the reminders wait for the morning
        cut = webhook.received[0].body
        assert (cut["meter"], cut["reason"], cut["balance"]) == (  # type: ignore[index]
            "M-0", "zero_balance", "-1.00")
        with read_deliveries(config.server.data_dir) as deliveries:
            assert deliveries is not None
            held = {(d.notice_id, d.channel): d for d in deliveries.pending()}
        assert set(held) == {("M-0/low_balance/1/0", "webhook"), ("M-0/low_balance/1/0", "email"),
                             ("M-0/low_balance/2/0", "webhook"), ("M-0/low_balance/2/0", "email")}
        end = dt.datetime.now(SHANGHAI) + dt.timedelta(hours=1)
        for delivery in held.values():
            due = dt.datetime.fromtimestamp(delivery.next_ms / 1000, SHANGHAI)
            assert due.strftime("%H:%M") == end.strftime("%H:%M") and due.second == 0


async def test_a_refused_address_is_a_dead_letter_and_a_failing_receiver_is_retried(
        tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    answers = [503, 500]
    webhook.answer = lambda body: answers.pop(0) if answers else 200
    config = notify_park(tmp_path / "park", smtp.port, webhook.url())
    async with open_park(config, with_field=False, clock_ms=lambda: T0) as park:
        await park.ledger.top_up("M-1", 1_000, "pay-1", T0)  # t1: refused + cfo
        await park.ledger.top_up("M-0", 1_000, "pay-0", T0)  # t0: webhook + e-mail
        await wait_for(lambda: len(webhook.received) == 1)
        assert webhook.received[0].notice_id == "receipt/pay-0"
        assert answers == []  # it took three attempts
        await wait_for(lambda: {m.body["To"] for m in smtp.messages()} == {
            "cfo@acme.example", "energy@hongda.example"})
        assert park.delivery is not None
        await wait_for(lambda: park.delivery.figures().dead == 1)  # type: ignore[union-attr]
        await trio.sleep(0.1)
        with read_deliveries(config.server.data_dir) as deliveries:
            assert deliveries is not None
            [dead] = deliveries.dead()
        assert (dead.notice_id, dead.channel, dead.address) == (
            "receipt/pay-1", "email", "energy@acme.example")
        assert dead.detail.startswith("SMTP 550") and dead.attempts == 1
        figures = park.delivery.figures()
        assert (figures.delivered, figures.retried, figures.dead) == (3, 2, 1)


async def test_a_cut_and_its_restore_are_both_told(
        tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    config = notify_park(tmp_path / "park", smtp.port, webhook.url())
    async with open_park(config, with_field=False, clock_ms=lambda: T0) as park:
        park.registry.deliver_reading_nowait(0, Reading(T0, 1_000_000, 3000.0))
        park.registry.deliver_reading_nowait(0, Reading(T0 + 3_600_000, 1_100_500, 3000.0))
        await wait_for(lambda: "supply_cut" in kinds(webhook))
        ack = await park.ledger.top_up("M-0", 5_000, "pay-back", T0 + 3_700_000)
        assert ack.balance == 4_950
        await wait_for(lambda: "supply_restored" in kinds(webhook))
        restored = next(r.body for r in webhook.received
                        if r.body["kind"] == "supply_restored")  # type: ignore[index]
        assert (restored["balance"], restored["after"]) == ("49.50", "zero_balance")  # type: ignore[index]

        def subjects() -> list[str]:
            return [m.body["Subject"] for m in smtp.messages()
                    if m.body["To"] == "energy@hongda.example"]

        await wait_for(lambda: "电表 M-0 已恢复供电" in subjects())
        assert "电表 M-0 已停止供电" in subjects()
