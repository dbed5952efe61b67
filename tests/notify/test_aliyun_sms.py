"""The Aliyun SMS adapter against a fake Dysmsapi that checks every signature itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import httpx
import pytest

from protocols.notify.aliyun_sms import (
    CODE_OUTCOMES,
    AliyunSms,
    canonicalized_query,
    outcome_of,
    percent_encode,
    provider_number,
    signature,
    string_to_sign,
    timestamp,
)
from protocols.notify.channel import Message
from tests.notify.fakes import FakeAliyun, closed_port, expected_signature, open_fake

KEY_ID = "LTAI5tTestKeyId"
SECRET = "TestSecret0123456789abcdefABCDEF"
SIGN = "某某园区"

LOW_BALANCE_TEXT = ("【某某园区】${tenant_name}：电表${meter}余额${balance}元，"
                    "已低于${level}元，请及时充值。")
SUPPLY_CUT_TEXT = "【某某园区】电表${meter}余额不足，已于${time}断电。"

FIELDS = {"balance": "18.40", "meter": "M-0001", "tenant_name": "ACME Tools Ltd",
          "level": "20.00", "hours": "7"}


def low_balance(address: str = "+8613800000000", notice_id: str = "low_balance:M-0001:17",
                **fields: str) -> Message:
    return Message(notice_id=notice_id, kind="low_balance", channel="sms", address=address,
                   language="zh-CN", subject="", body="", fields={**FIELDS, **fields},
                   tenant="acme", meter="M-0001", ts_ms=1_700_000_000_000)


def fake_provider() -> FakeAliyun:
    return FakeAliyun(keys={KEY_ID: SECRET},
                      templates={"SMS_465990001": LOW_BALANCE_TEXT,
                                 "SMS_465990002": SUPPLY_CUT_TEXT},
                      signs={SIGN})


@attrs.define
class Rig:
    provider: FakeAliyun
    url: str
    client: httpx.AsyncClient

    def adapter(self, **overrides: Any) -> AliyunSms:
        settings: dict[str, Any] = {
            "access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": SIGN,
            "templates": {"low_balance": "SMS_465990001", "supply_cut": "SMS_465990002"},
            "endpoint": self.url + "/", "timeout_s": 5.0, "client": self.client}
        return AliyunSms(**{**settings, **overrides})


@asynccontextmanager
async def open_rig(provider: FakeAliyun | None = None) -> AsyncIterator[Rig]:
    provider = provider or fake_provider()
    async with open_fake(provider.app()) as url, httpx.AsyncClient() as client:
        yield Rig(provider, url, client)


# -- the signature, against Alibaba's published examples ---------------------------------


def test_the_signature_of_alibabas_rpc_example() -> None:
    """The RPC signature document's DescribeRegions example (AccessKey testid / testsecret)."""
    params = {"AccessKeyId": "testid", "Action": "DescribeRegions", "Format": "XML",
              "SignatureMethod": "HMAC-SHA1",
              "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
              "SignatureVersion": "1.0", "TimeStamp": "2016-02-23T12:46:24Z",
              "Version": "2014-05-26"}
    assert string_to_sign("GET", params) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26TimeStamp%3D2016-02-23T12%253A46%253A24Z"
        "%26Version%3D2014-05-26")
    assert signature("GET", params, "testsecret") == "CT9X0VtwR86fNWSnsc6v8YGOjuE="


def test_the_signature_of_the_sms_documents_sendsms_example() -> None:
    """The SMS service's own example (testId / testSecret, a Chinese sign name, JSON param)."""
    params = {"AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123",
              "PhoneNumbers": "15300000001", "RegionId": "cn-hangzhou",
              "SignName": "阿里云短信测试专用", "SignatureMethod": "HMAC-SHA1",
              "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
              "SignatureVersion": "1.0", "TemplateCode": "SMS_71390007",
              "TemplateParam": '{"customer":"test"}', "Timestamp": "2017-07-12T02:42:19Z",
              "Version": "2017-05-25"}
    assert canonicalized_query(params) == (
        "AccessKeyId=testId&Action=SendSms&Format=XML&OutId=123&PhoneNumbers=15300000001"
        "&RegionId=cn-hangzhou&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B"
        "%E8%AF%95%E4%B8%93%E7%94%A8&SignatureMethod=HMAC-SHA1"
        "&SignatureNonce=45e25e9b-0a6f-4070-8c85-2956eda1b466&SignatureVersion=1.0"
        "&TemplateCode=SMS_71390007&TemplateParam=%7B%22customer%22%3A%22test%22%7D"
        "&Timestamp=2017-07-12T02%3A42%3A19Z&Version=2017-05-25")
    assert signature("GET", params, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    # The fake's own signer agrees on the same example (so it can be trusted to judge).
    assert expected_signature("GET", params, "testSecret")[1] == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


@pytest.mark.parametrize(("raw", "encoded"), [
    ("a b", "a%20b"), ("a*b", "a%2Ab"), ("a~b", "a~b"), ("a+b", "a%2Bb"), ("/", "%2F"),
    ("-_.", "-_."), ("余额", "%E4%BD%99%E9%A2%9D"), ('{"k":"v"}', "%7B%22k%22%3A%22v%22%7D"),
])
def test_percent_encoding_follows_alibabas_rules(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded


def test_the_timestamp_is_utc_to_the_second() -> None:
    shanghai = timezone(timedelta(hours=8))
    assert timestamp(datetime(2026, 3, 1, 8, 5, 9, 999_999, tzinfo=shanghai)) == (
        "2026-03-01T00:05:09Z")
    assert timestamp(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == "2026-12-31T23:59:59Z"


@pytest.mark.parametrize(("e164", "sent"), [
    ("+8613800000000", "13800000000"),    # mainland: the 11 digits
    ("+85291234567", "85291234567"),      # elsewhere: country code and number, no plus
    ("+14155550123", "14155550123"),
    ("+8610123", "8610123"),              # +86 but not a mobile's 11 digits: left whole
    ("13800000000", None), ("+0123456789", None), ("+86 138 0000 0000", None),
])
def test_phone_numbers_in_sendsms_form(e164: str, sent: str | None) -> None:
    assert provider_number(e164) == sent


# -- outcomes -----------------------------------------------------------------------------


async def test_an_accepted_message_is_delivered_with_its_biz_id() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter().send(low_balance())
        assert outcome.kind == "delivered"
        assert outcome.detail == "BizId 900619700001^0"
        [sent] = rig.provider.sent
        assert sent.phone == "13800000000"
        assert sent.sign_name == SIGN
        assert sent.template_code == "SMS_465990001"
        assert sent.out_id == "low_balance:M-0001:17"   # receipts come back with the notice id
        assert sent.template_param == FIELDS
        assert sent.text == ("【某某园区】ACME Tools Ltd：电表M-0001余额18.40元，已低于20.00元，"
                             "请及时充值。")
        [request] = rig.provider.requests
        assert request["RegionId"] == "cn-hangzhou"
        assert request["AccessKeyId"] == KEY_ID
        # TemplateParam is compact JSON of strings, non-ASCII as it is (encoded on the wire).
        assert json.loads(request["TemplateParam"]) == FIELDS
        assert "\\u" not in request["TemplateParam"]


async def test_every_request_has_a_fresh_nonce() -> None:
    """The fake refuses a nonce it has seen (as Alibaba does), so a retry must draw anew."""
    async with open_rig() as rig:
        adapter = rig.adapter()
        first = await adapter.send(low_balance())
        again = await adapter.send(low_balance())  # the same notice, retried
        assert (first.kind, again.kind) == ("delivered", "delivered")
        nonces = [r["SignatureNonce"] for r in rig.provider.requests]
        assert len(set(nonces)) == 2
        assert [s.out_id for s in rig.provider.sent] == ["low_balance:M-0001:17"] * 2


async def test_a_reused_nonce_is_refused_and_retried() -> None:
    async with open_rig() as rig:
        adapter = rig.adapter(new_nonce=lambda: "9b9ed4c4-0d5b-4bd9-a1f5-000000000001")
        assert (await adapter.send(low_balance())).kind == "delivered"
        outcome = await adapter.send(low_balance())
        assert outcome.kind == "retry"
        assert outcome.detail.startswith("SignatureNonceUsed: ")


async def test_a_refused_number_is_dead() -> None:
    provider = fake_provider()
    provider.refused.add("13900000000")
    async with open_rig(provider) as rig:
        outcome = await rig.adapter().send(low_balance("+8613900000000"))
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("isv.MOBILE_NUMBER_ILLEGAL: 非法手机号")
        assert provider.sent == []


async def test_a_503_is_retried_with_the_providers_wait() -> None:
    provider = fake_provider()
    provider.outages = 1
    provider.retry_after = "30"
    async with open_rig(provider) as rig:
        adapter = rig.adapter()
        outcome = await adapter.send(low_balance())
        assert (outcome.kind, outcome.retry_after_s) == ("retry", 30.0)
        assert outcome.detail == "HTTP 503: Service Temporarily Unavailable"
        # The outage over, the same notice goes.
        assert (await adapter.send(low_balance())).kind == "delivered"


async def test_the_per_number_rate_limit_is_retried() -> None:
    provider = fake_provider()
    provider.limited.add("13800000000")
    async with open_rig(provider) as rig:
        outcome = await rig.adapter().send(low_balance())
        assert outcome.kind == "retry"
        assert outcome.detail.startswith("isv.BUSINESS_LIMIT_CONTROL: ")
        assert "per-number sending rate limit" in outcome.detail


async def test_a_wrong_secret_is_a_dead_configuration_error() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter(access_key_secret="not-the-secret").send(low_balance())
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("SignatureDoesNotMatch: Specified signature is not "
                                         "matched with our calculation.")
        assert "configuration: " in outcome.detail
        assert "access_key_secret in [notify.sms]" in outcome.detail
        assert "not-the-secret" not in outcome.detail
        assert rig.provider.sent == []


async def test_an_unknown_access_key_is_a_dead_configuration_error() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter(access_key_id="LTAI5tNoSuchKey").send(low_balance())
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("InvalidAccessKeyId.NotFound: ")
        assert "access_key_id in [notify.sms]" in outcome.detail


async def test_an_unapproved_sign_name_and_an_unknown_template_are_dead() -> None:
    async with open_rig() as rig:
        unsigned = await rig.adapter(sign_name="别的签名").send(low_balance())
        assert unsigned.kind == "dead"
        assert unsigned.detail.startswith("isv.SMS_SIGNATURE_ILLEGAL: ")
        assert "sign_name in [notify.sms]" in unsigned.detail
        unknown = await rig.adapter(templates={"low_balance": "SMS_000000000"}).send(
            low_balance())
        assert unknown.kind == "dead"
        assert unknown.detail.startswith("isv.SMS_TEMPLATE_ILLEGAL: ")


async def test_a_notice_without_a_templates_variable_is_dead() -> None:
    """The supply-cut template names ${time}; a notice that lacks it cannot be rendered."""
    async with open_rig() as rig:
        message = attrs.evolve(low_balance(), kind="supply_cut")
        outcome = await rig.adapter().send(message)
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("isv.TEMPLATE_MISSING_PARAMETERS: ")
        outcome = await rig.adapter().send(attrs.evolve(message, fields={**FIELDS,
                                                                         "time": "07:30"}))
        assert outcome.kind == "delivered"
        assert rig.provider.sent[-1].text == "【某某园区】电表M-0001余额不足，已于07:30断电。"


async def test_a_kind_without_a_template_is_dead_before_any_request() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter().send(attrs.evolve(low_balance(), kind="topup_receipt"))
        assert outcome.kind == "dead"
        assert outcome.detail == ("configuration: no SMS template for kind topup_receipt in "
                                  "[notify.sms.templates]")
        assert rig.provider.requests == []


async def test_an_address_that_is_not_e164_is_dead_before_any_request() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter().send(low_balance("13800000000"))
        assert outcome.kind == "dead"
        assert "E.164" in outcome.detail
        assert rig.provider.requests == []


async def test_a_clock_far_off_is_refused_and_retried() -> None:
    async with open_rig() as rig:
        def late() -> datetime:
            return datetime.now(UTC) - timedelta(minutes=20)

        outcome = await rig.adapter(now=late).send(low_balance())
        assert outcome.kind == "retry"
        assert outcome.detail.startswith("InvalidTimeStamp.Expired: ")
        assert "clock" in outcome.detail


async def test_a_provider_that_does_not_answer_in_time_is_retried() -> None:
    provider = fake_provider()
    provider.delay_s = 2.0
    async with open_rig(provider) as rig:
        outcome = await rig.adapter(timeout_s=0.2).send(low_balance())
        assert outcome.kind == "retry"
        assert outcome.detail == "no answer within 0.2 s (ReadTimeout)"


async def test_a_provider_out_of_reach_is_retried() -> None:
    async with httpx.AsyncClient() as client:
        adapter = AliyunSms(access_key_id=KEY_ID, access_key_secret=SECRET, sign_name=SIGN,
                            templates={"low_balance": "SMS_465990001"},
                            endpoint=await closed_port(), client=client)
        outcome = await adapter.send(low_balance())
        assert outcome.kind == "retry"
        assert outcome.detail.startswith("ConnectError")


async def test_a_wrong_endpoint_is_a_dead_configuration_error() -> None:
    async with open_rig() as rig:
        outcome = await rig.adapter(endpoint=rig.url + "/nothing-here").send(low_balance())
        assert outcome.kind == "dead"
        assert outcome.detail.startswith("configuration: HTTP 404 without an SMS answer")


async def test_the_adapter_closes_only_a_client_it_made() -> None:
    async with open_rig() as rig:
        shared = rig.adapter()
        await shared.aclose()
        assert not rig.client.is_closed
        own = AliyunSms(access_key_id=KEY_ID, access_key_secret=SECRET, sign_name=SIGN,
                        templates={"low_balance": "SMS_465990001"}, endpoint=rig.url + "/")
        assert (await own.send(low_balance())).kind == "delivered"
        await own.aclose()
        assert "TestSecret" not in repr(own)


# -- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "kind"), [
    (200, "OK", "delivered"),
    (200, "isv.BLACK_KEY_CONTROL_LIMIT", "dead"),
    (200, "isv.INVALID_PARAMETERS", "dead"),
    (200, "isv.DAY_LIMIT_CONTROL", "retry"),
    (200, "isv.AMOUNT_NOT_ENOUGH", "retry"),
    (200, "isp.SYSTEM_ERROR", "retry"),
    (200, "isp.RAM_PERMISSION_DENY", "dead"),
    (400, "Throttling.User", "retry"),
    (200, "isp.SOMETHING_NEW", "retry"),      # the platform's side, undocumented
    (400, "Throttling.Something", "retry"),
    (200, "isv.SOMETHING_NEW", "dead"),       # refused, undocumented: an operator should look
    (500, "SomethingNew", "retry"),
])
def test_codes_map_to_outcomes(status: int, code: str, kind: str) -> None:
    assert outcome_of(status, code, "words").kind == kind


def test_every_configuration_error_says_so() -> None:
    config_codes = {code for code, o in CODE_OUTCOMES.items()
                    if o.why.startswith("configuration: ")}
    assert {"SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound", "isv.SMS_TEMPLATE_ILLEGAL",
            "isv.SMS_SIGNATURE_ILLEGAL", "isp.RAM_PERMISSION_DENY"} <= config_codes
    assert all(CODE_OUTCOMES[code].kind == "dead" for code in config_codes)
