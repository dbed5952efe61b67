"""Payment notifications (``POST /api/payments/notify``): signed with the key's secret over
timestamp + "." + body; forged, stale and replayed notifications move no money; a notification
is idempotent on its transaction id; a tenant's payment goes to its main meter or is split."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.auth import SYSTEM
from server.config import ConfigError, ParkConfig
from tests.http.harness import WebPark, open_web_park
from tests.server.parks import park_toml

SECRET = "s3cret-s3cret-s3cret-s3cret-0123456789"
KEYS = f'''
[[payment_keys]]
id = "wechat"
secret = "{SECRET}"

[[meters]]
id = "M-9"
tenant = "t0"
gateway = "gw1"
unit = 9
profile = "sdm630"
relay_coil = 0
tariff = "flat"
opening_balance = "10.00"
'''


def signed(body: dict[str, Any], *, key: str = "wechat", secret: str = SECRET,
           timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers a payment integration sends (as docs/http-api.md says)."""
    raw = json.dumps(body).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = hmac.new(secret.encode(), stamp.encode() + b"." + raw,
                         hashlib.sha256).hexdigest()
    return raw, {"X-Api-Key": key, "X-Timestamp": stamp, "X-Signature": signature,
                 "Content-Type": "application/json"}


async def notify(web: WebPark, body: dict[str, Any], *, skew_s: int = 0,
                 **kwargs: Any) -> httpx.Response:
    """``skew_s``: a timestamp that far from now (when sent)."""
    if skew_s:
        kwargs["timestamp"] = int(time.time()) + skew_s
    raw, headers = signed(body, **kwargs)
    return await web.client.post("/api/payments/notify", content=raw, headers=headers)


def balance(web: WebPark, meter_id: str) -> int:
    return web.park.registry.get(meter_id).state.balance


async def test_a_signed_notification_credits_once(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=KEYS) as web:
        body = {"transaction_id": "wx-1", "meter": "M-1", "amount": "50.00",
                "channel": "wechat"}
        first = await notify(web, body)
        assert first.status_code == 200, first.text
        assert first.json() == {"transaction_id": "wx-1", "status": "applied", "meter": "M-1",
                                "balance": "150.00", "parts": [
                                    {"meter": "M-1", "amount": "50.00", "balance": "150.00",
                                     "status": "applied"}]}
        again = await notify(web, body)  # the provider retries: a new signature, same payment
        assert (again.status_code, again.json()["status"], again.json()["balance"]) == (
            200, "duplicate", "150.00")
        assert balance(web, "M-1") == 150_00
        other = await notify(web, {**body, "amount": "60.00"})  # same id, other payment
        assert (other.status_code, other.json()["error"]) == (409, "conflict")
        assert balance(web, "M-1") == 150_00
        page = web.park.operations.audit_page(SYSTEM, limit=5)
        entry = next(e for e in page.entries if e.result == "accepted")
        assert (entry.user, entry.channel, entry.reference) == (
            "payment:wechat", "payment", "wechat:wx-1")


@pytest.mark.parametrize(("tamper", "error"), [
    ({"secret": "not-the-secret-not-the-secret-0000000"}, "bad_signature"),
    ({"key": "alipay"}, "bad_signature"),
    ({"skew_s": -301}, "stale"),  # (relative: the parameters are made at collection time)
    ({"skew_s": 400}, "stale"),
])
async def test_forged_or_stale_notifications_move_no_money(tmp_path: Path, tamper: dict[str, Any],
                                                          error: str) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=KEYS) as web:
        answer = await notify(web, {"transaction_id": "wx-2", "meter": "M-1",
                                    "amount": "50.00"}, **tamper)
        assert answer.status_code == 401
        assert (answer.json()["status"], answer.json()["error"]) == ("refused", error)
        assert balance(web, "M-1") == 100_00


async def test_a_body_changed_after_signing_is_refused(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=KEYS) as web:
        raw, headers = signed({"transaction_id": "wx-3", "meter": "M-1", "amount": "1.00"})
        forged = raw.replace(b'"1.00"', b'"900.00"')
        answer = await web.client.post("/api/payments/notify", content=forged, headers=headers)
        assert (answer.status_code, answer.json()["error"]) == (401, "bad_signature")
        missing = await web.client.post("/api/payments/notify", content=raw,
                                        headers={"Content-Type": "application/json"})
        assert (missing.status_code, missing.json()["error"]) == (401, "bad_signature")
        assert balance(web, "M-1") == 100_00


async def test_a_tenant_is_credited_on_its_main_meter_or_as_split(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=KEYS) as web:
        main = await notify(web, {"transaction_id": "t-1", "tenant": "t0", "amount": "5.00"})
        assert (main.status_code, main.json()["meter"]) == (200, "M-0"), main.text
        split = await notify(web, {"transaction_id": "t-2", "tenant": "t0", "amount": "30.00",
                                   "split": {"M-0": "10.00", "M-9": "20.00"}})
        assert split.status_code == 200, split.text
        assert [(p["meter"], p["amount"], p["balance"]) for p in split.json()["parts"]] == [
            ("M-0", "10.00", "115.00"), ("M-9", "20.00", "30.00")]
        assert (balance(web, "M-0"), balance(web, "M-9")) == (115_00, 30_00)
        again = await notify(web, {"transaction_id": "t-2", "tenant": "t0", "amount": "30.00",
                                   "split": {"M-0": "10.00", "M-9": "20.00"}})
        assert again.json()["status"] == "duplicate"
        assert (balance(web, "M-0"), balance(web, "M-9")) == (115_00, 30_00)


@pytest.mark.parametrize(("body", "status", "error"), [
    ({"transaction_id": "b1", "meter": "M-1", "amount": "1.001"}, 400, "bad_request"),
    ({"transaction_id": "b2", "meter": "M-1", "amount": 5}, 400, "bad_request"),
    ({"transaction_id": "b3", "meter": "M-1", "amount": "-5.00"}, 400, "bad_request"),
    ({"transaction_id": "", "meter": "M-1", "amount": "5.00"}, 400, "bad_request"),
    ({"transaction_id": "b4", "amount": "5.00"}, 400, "bad_request"),
    ({"transaction_id": "b5", "meter": "M-1", "tenant": "t1", "amount": "5.00"}, 400,
     "bad_request"),
    ({"transaction_id": "b6", "meter": "NOPE", "amount": "5.00"}, 404, "unknown_meter"),
    ({"transaction_id": "b7", "tenant": "nobody", "amount": "5.00"}, 404, "unknown_tenant"),
    ({"transaction_id": "b8", "tenant": "t0", "amount": "5.00", "split": {"M-0": "4.00"}},
     400, "bad_request"),
    ({"transaction_id": "b9", "tenant": "t0", "amount": "5.00", "split": {"M-1": "5.00"}},
     400, "bad_request"),
])
async def test_bad_notifications_get_a_precise_error(tmp_path: Path, body: dict[str, Any],
                                                     status: int, error: str) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=KEYS) as web:
        answer = await notify(web, body)
        assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
        assert answer.json()["status"] == "refused"
        assert sum(balance(web, m) for m in ("M-0", "M-1", "M-2", "M-9")) == 310_00


def test_payment_keys_are_checked_in_the_config(tmp_path: Path) -> None:
    base = park_toml(tmp_path / "park")
    short = base + '[[payment_keys]]\nid = "k"\nsecret = "short"\n'
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        ParkConfig.from_toml_text(short, "p.toml")
    twice = base + 2 * f'[[payment_keys]]\nid = "k"\nsecret = "{SECRET}"\n'
    with pytest.raises(ConfigError, match='duplicate payment key "k"'):
        ParkConfig.from_toml_text(twice, "p.toml")
    assert "s3cret" not in repr(ParkConfig.from_toml_text(
        base + f'[[payment_keys]]\nid = "k"\nsecret = "{SECRET}"\n', "p.toml"))
