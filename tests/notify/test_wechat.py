"""The WeChat template-message adapter against a fake Official Account API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from protocols.notify.channel import Message
from protocols.notify.wechat import TOKEN_MARGIN_S, WechatTemplates
from tests.notify.fakes import FakeWechat, closed_port, open_fake

APP_ID = "wx5c445cffbed068cb"
APP_SECRET = "0123456789abcdef0123456789abcdef"
FOLLOWER = "oABCD1234567890"
STRANGER = "oZZZZ0000000000"

LOW_BALANCE_TEMPLATE = "6hRjk-EH06QKNsGwr0RBe9y6s0JDj0-fYhUrVJCJH1w"
SUPPLY_CUT_TEMPLATE = "xD7Tt9tA0Cib6f-bs_z4PfYJ4dL1u80U2SSm0uWuZaU"

FIELDS = {"balance": "18.40", "meter": "M-0001", "tenant_name": "ACME Tools Ltd",
          "level": "20.00"}


def notice(kind: str = "low_balance", address: str = FOLLOWER, **fields: str) -> Message:
    return Message(notice_id=f"{kind}:M-0001:17", kind=kind, channel="wechat", address=address,
                   language="zh-CN", subject="", body="", fields={**FIELDS, **fields},
                   tenant="acme", meter="M-0001", ts_ms=1_700_000_000_000)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class Rig:
    account: FakeWechat
    url: str
    client: httpx.AsyncClient
    clock: FakeClock = attrs.Factory(FakeClock)

    def adapter(self, **overrides: Any) -> WechatTemplates:
        settings: dict[str, Any] = {
            "app_id": APP_ID, "app_secret": APP_SECRET,
            "templates": {"low_balance": LOW_BALANCE_TEMPLATE,
                          "supply_cut": SUPPLY_CUT_TEMPLATE},
            # The supply-cut template is one of WeChat's library's: its keys are fixed.
            "data_keys": {"supply_cut": {"thing1": "meter", "amount2": "balance"}},
            "endpoint": self.url, "timeout_s": 5.0, "client": self.client, "clock": self.clock}
        return WechatTemplates(**{**settings, **overrides})


@asynccontextmanager
async def open_rig(**account: Any) -> AsyncIterator[Rig]:
    fake = FakeWechat(app_id=APP_ID, app_secret=APP_SECRET,
                      templates={LOW_BALANCE_TEMPLATE: {"balance", "meter"},
                                 SUPPLY_CUT_TEMPLATE: {"thing1", "amount2"}},
                      followers={FOLLOWER}, **account)
    async with open_fake(fake.app()) as url, httpx.AsyncClient() as client:
        yield Rig(fake, url, client)


async def test_a_message_is_delivered_with_the_notices_fields() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter().send(notice())
        assert outcome.kind == "delivered"
        assert outcome.detail == "msgid 200228333"
        [sent] = rig.account.sent
        assert (sent.touser, sent.template_id) == (FOLLOWER, LOW_BALANCE_TEMPLATE)
        assert sent.data == FIELDS


async def test_a_kind_maps_its_templates_keys_to_fields() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter().send(notice("supply_cut"))
        assert outcome.kind == "delivered"
        assert rig.account.sent[0].data == {"thing1": "M-0001", "amount2": "18.40"}


async def test_a_mapped_field_the_notice_lacks_is_dead_before_any_request() -> None:
    async with open_rig() as rig:
        adapter = rig.adapter(data_keys={"supply_cut": {"thing1": "meter", "time3": "time"}})
        outcome = await adapter.send(notice("supply_cut"))
        assert outcome.kind == "dead"
        assert outcome.detail == "the supply_cut notice has no time for its WeChat template"
        assert rig.account.token_fetches == 0


async def test_the_token_is_fetched_once_and_reused() -> None:
    async with open_rig() as rig:
        adapter = rig.adapter()
        for _ in range(3):
            assert (await adapter.send(notice())).kind == "delivered"
        assert rig.account.token_fetches == 1
        assert rig.account.tokens_seen == ["ACCESS_TOKEN_1"] * 3
        stats = adapter.statistics()
        assert stats.fetches == 1
        assert stats.valid_for_s == 7200 - TOKEN_MARGIN_S


async def test_concurrent_sends_share_one_token_fetch() -> None:
    async with open_rig() as rig:
        adapter = rig.adapter()
        outcomes = []

        async def one() -> None:
            outcomes.append(await adapter.send(notice()))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
        assert [o.kind for o in outcomes] == ["delivered"] * 5
        assert rig.account.token_fetches == 1


async def test_an_invalidated_token_is_refreshed_and_the_message_sent() -> None:
    """40001: another process fetched a newer token (only the latest is valid)."""
    async with open_rig() as rig:
        adapter = rig.adapter()
        assert (await adapter.send(notice())).kind == "delivered"
        rig.account.rotate()
        outcome = await adapter.send(notice())
        assert outcome.kind == "delivered"
        assert rig.account.token_fetches == 2
        assert rig.account.tokens_seen == ["ACCESS_TOKEN_1", "ACCESS_TOKEN_1", "ACCESS_TOKEN_2"]
        assert len(rig.account.sent) == 2


async def test_a_token_is_renewed_before_it_expires() -> None:
    async with open_rig(expires_in=7200) as rig:
        adapter = rig.adapter()
        assert (await adapter.send(notice())).kind == "delivered"
        rig.clock.now += 7200 - TOKEN_MARGIN_S - 1
        assert (await adapter.send(notice())).kind == "delivered"
        assert rig.account.token_fetches == 1
        rig.clock.now += 1
        assert (await adapter.send(notice())).kind == "delivered"
        assert rig.account.token_fetches == 2
        assert rig.account.tokens_seen[-1] == "ACCESS_TOKEN_2"


async def test_a_recipient_who_does_not_follow_is_dead() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter().send(notice(address=STRANGER))
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("errcode 43004: require subscribe")
        assert "does not follow" in outcome.detail
        assert rig.account.sent == []


async def test_a_busy_wechat_is_retried() -> None:
    async with open_rig(scripted=[(-1, "system error")]) as rig:
        adapter = rig.adapter()
        outcome = await adapter.send(notice())
        assert outcome.kind == "retry"
        assert outcome.detail.startswith("errcode -1: system error")
        assert (await adapter.send(notice())).kind == "delivered"
        assert rig.account.token_fetches == 1


async def test_a_minute_quota_is_retried_after_a_minute_and_a_daily_one_later() -> None:
    async with open_rig(scripted=[(45011, "api minute-quota reach limit, must slower"),
                                  (45009, "reach max api daily quota limit")]) as rig:
        adapter = rig.adapter()
        minute = await adapter.send(notice())
        assert (minute.kind, minute.retry_after_s) == ("retry", 60.0)
        daily = await adapter.send(notice())
        assert (daily.kind, daily.retry_after_s) == ("retry", None)
        assert "daily API quota" in daily.detail


async def test_a_fresh_token_refused_too_is_retried_not_looped() -> None:
    invalid = (40001, "invalid credential, access_token is invalid or not latest")
    async with open_rig(scripted=[invalid, invalid]) as rig:
        outcome = await rig.adapter().send(notice())
        assert outcome.kind == "retry"
        assert outcome.detail.endswith("(a fresh token was refused too)")
        assert rig.account.token_fetches == 2
        assert len(rig.account.tokens_seen) == 2


async def test_a_bad_gateway_is_retried() -> None:
    async with open_rig(outages=1) as rig:
        adapter = rig.adapter()
        outcome = await adapter.send(notice())
        assert (outcome.kind, outcome.detail) == ("retry", "HTTP 502")
        assert (await adapter.send(notice())).kind == "delivered"


async def test_an_invalid_openid_is_dead() -> None:
    async with open_rig(scripted=[(40003, "invalid openid")]) as rig:
        outcome = await rig.adapter().send(notice())
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("errcode 40003: invalid openid")


async def test_an_undocumented_errcode_is_dead_for_an_operator_to_see() -> None:
    async with open_rig(scripted=[(1119003, "something new")]) as rig:
        outcome = await rig.adapter().send(notice())
        assert outcome.kind == "dead"
        assert outcome.detail.endswith("(not a documented errcode)")


async def test_an_unknown_template_id_is_a_dead_configuration_error() -> None:
    async with open_rig() as rig:
        adapter = rig.adapter(templates={"low_balance": "no-such-template"})
        outcome = await adapter.send(notice())
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("errcode 40037: invalid template_id")
        assert "configuration: " in outcome.detail


async def test_a_template_value_missing_is_dead() -> None:
    """47003: the template uses a key the message does not carry."""
    async with open_rig() as rig:
        message = attrs.evolve(notice(), fields={"meter": "M-0001"})
        outcome = await rig.adapter().send(message)
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("errcode 47003: argument invalid! data.balance")


async def test_a_wrong_app_secret_is_dead_and_says_where_to_look() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter(app_secret="f" * 32).send(notice())
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("access token: errcode 40125: invalid appsecret")
        assert "app_secret in [notify.wechat]" in outcome.detail
        assert "f" * 32 not in outcome.detail
        assert rig.account.tokens_seen == []   # no send without a token


async def test_a_kind_without_a_template_is_dead_before_any_request() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter().send(notice("quota"))
        assert outcome.kind == "dead"
        assert outcome.detail == ("configuration: no WeChat template for kind quota in "
                                  "[notify.wechat.templates]")
        assert rig.account.token_fetches == 0


async def test_wechat_out_of_reach_is_retried() -> None:
    async with httpx.AsyncClient() as client:
        adapter = WechatTemplates(app_id=APP_ID, app_secret=APP_SECRET,
                                  templates={"low_balance": LOW_BALANCE_TEMPLATE},
                                  endpoint=(await closed_port()).rstrip("/"), client=client)
        outcome = await adapter.send(notice())
        assert outcome.kind == "retry"
        assert outcome.detail.startswith("access token: ConnectError")
        assert APP_SECRET not in outcome.detail
        assert APP_SECRET not in repr(adapter)
