"""Tenant notices end to end: raised in a running park, written to the outbox, delivered by
the delivery process to a real SMTP server (aiosmtpd) and a webhook receiver that checks the
signature, in the tenant's language, with the right amounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from bench.notify_sinks import SmtpSink, WebhookSink
from policies.records import Reading
from server.app import open_park
from tests.notify.parks import SECRET, T0, notify_park, wait_for


@pytest.fixture
def smtp() -> object:
    sink = SmtpSink(refuse=frozenset({"gone@acme.example"}))
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


async def read(park: object, key: int, register_wh: int, hour: int, power: float = 3000.0,
               ) -> None:
    park.registry.deliver_reading_nowait(  # type: ignore[attr-defined]
        key, Reading(T0 + hour * 3_600_000, register_wh, power))
    await trio.sleep(0.05)


async def test_a_low_balance_reaches_email_and_webhook_in_the_tenants_language(
        tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    config = notify_park(tmp_path / "park", smtp.port, webhook.url())
    async with open_park(config, with_field=False, clock_ms=lambda: T0) as park:
        assert park.delivery is not None
        await read(park, 0, 1_000_000, 0)  # a baseline
        await read(park, 1, 1_000_000, 0)
        await read(park, 0, 1_055_000, 1)  # 55 kWh at 1.00: 100.00 -> 45.00, below 50.00
        await read(park, 1, 1_061_500, 1)  # 61.5 kWh: 38.50
        await wait_for(lambda: len(smtp.messages()) >= 2 and len(webhook.received) >= 1)
        mails = {m.body["To"]: m.body for m in smtp.messages()}
        zh = mails["energy@hongda.example"]
        assert zh["Subject"] == "电表 M-0 余额不足：CNY 45.00"
        assert "已低于提醒金额 CNY 50.00" in zh.get_content()
        assert zh["Content-Language"] == "zh-CN"
        en = mails["energy@acme.example"]
        assert en["Subject"] == "Low balance on meter M-1: CNY 38.50"
        assert "at or below your reminder\r\nlevel of CNY 50.00" in en.get_content()
        assert "cfo@acme.example" not in mails  # that contact gets receipts only
        [hook] = webhook.received
        body = hook.body
        assert isinstance(body, dict)
        assert (body["kind"], body["tenant"], body["meter"], body["balance"]) == (
            "low_balance", "t0", "M-0", "45.00")
        assert body["level"] == "50.00" and body["language"] == "zh-CN"
        assert body["id"] == hook.notice_id == zh["X-Notice-Id"]
        assert body["ts"] == "2026-11-18T12:06:40.000Z"
        assert "余额CNY45.00" in body["message"]
        assert webhook.bad_signatures == 0


async def test_a_top_up_receipt_goes_to_every_contact_that_wants_it(
        tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    config = notify_park(tmp_path / "park", smtp.port, webhook.url())
    async with open_park(config, with_field=False, clock_ms=lambda: T0) as park:
        ack = await park.ledger.top_up("M-1", 12_345, "pay-001", T0)
        assert ack.balance == 22_345
        await wait_for(lambda: len(smtp.messages()) >= 2)
        receipts = sorted((m.body["To"], m.body["Subject"]) for m in smtp.messages())
        assert receipts == [
            ("cfo@acme.example", "Top-up received: CNY 123.45 on meter M-1"),
            ("energy@acme.example", "Top-up received: CNY 123.45 on meter M-1"),
        ]
        assert {m.notice_id for m in smtp.messages()} == {"receipt/pay-001"}
        again = await park.ledger.top_up("M-1", 12_345, "pay-001", T0)  # a repeat
        assert again.balance == 22_345
        await trio.sleep(0.5)
        assert len(smtp.messages()) == 2
