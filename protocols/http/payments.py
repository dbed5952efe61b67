"""Payment notifications: a payment integration's signed word that a tenant has paid.

Theory of operation
-------------------
A payment provider (WeChat Pay, Alipay, a bank) tells its integration that a tenant paid; the
integration relays it to ``POST /api/payments/notify`` with three headers: ``X-Api-Key`` (a
``[[payment_keys]]`` id), ``X-Timestamp`` (unix seconds) and ``X-Signature``: the lowercase
hex HMAC-SHA256, keyed with the key's secret, of ``timestamp + "." + raw body``.

:func:`verify_signature` decides, before the body is even parsed:

* an unknown key, a signature that does not match (compared in constant time), or a
  timestamp that is not unix seconds -> ``bad_signature``;
* a timestamp more than :data:`MAX_SKEW_S` from the server's clock -> ``stale``: an old
  notification recorded and sent again later cannot move money.

Both are 401 and move no money. A notification that passes is then idempotent on its
``transaction_id`` (the journal's reference is ``<key id>:<transaction id>``, so two providers
cannot collide): sent again, it is answered ``duplicate`` with the balance and credits
nothing; the same transaction id with another amount or meter is a ``conflict``.

:func:`parse_notice` reads the body: ``transaction_id``, ``amount`` (a decimal string),
``channel``, and ``meter``, or ``tenant`` (the tenant's main meter, its first in the config),
optionally with ``split``: ``{"M-1": "30.00", "M-2": "20.00"}``, parts that must add up to
``amount`` exactly.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from policies.money import MoneyError, parse_positive_amount

MAX_SKEW_S: Final = 300
MAX_TRANSACTION_ID: Final = 64
MAX_CHANNEL: Final = 32
MAX_SPLIT: Final = 100


class PaymentRefused(Exception):
    """A notification refused before any money moves (``code``: the contract's word)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """What a payment integration puts in ``X-Signature``."""
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secrets: Mapping[str, bytes], key_id: str | None, timestamp: str | None,
                     given: str | None, body: bytes, now_s: float) -> str:
    """The key id of a genuine, fresh notification, or :class:`PaymentRefused`."""
    secret = secrets.get(key_id or "")
    if secret is None:
        raise PaymentRefused("bad_signature", "unknown payment key (X-Api-Key)")
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit() \
            or len(timestamp) > 12:
        raise PaymentRefused("bad_signature", "X-Timestamp must be unix seconds")
    expected = signature(secret, timestamp, body)
    if not given or not hmac.compare_digest(expected, given.strip().lower()):
        raise PaymentRefused("bad_signature", "the signature does not match (X-Signature: hex "
                                              "HMAC-SHA256 of timestamp + '.' + body)")
    if abs(now_s - int(timestamp)) > MAX_SKEW_S:
        raise PaymentRefused("stale", f"X-Timestamp is more than {MAX_SKEW_S} s from the "
                                      "server's clock (a replay, or a clock to fix)")
    return key_id or ""


@attrs.frozen
class Part:
    meter_id: str
    amount: int  # minor units


@attrs.frozen
class PaymentNotice:
    transaction_id: str
    amount: int
    channel: str
    parts: tuple[Part, ...]
    tenant: str | None


def _text(body: Mapping[str, Any], key: str, limit: int, *, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise PaymentRefused("bad_request", f'"{key}" must be a non-empty string')
    if len(value) > limit:
        raise PaymentRefused("bad_request", f'"{key}" is longer than {limit} characters')
    return value


def _amount(value: object, decimals: int, what: str) -> int:
    try:
        return parse_positive_amount(value, decimals, what=what)
    except MoneyError as error:
        raise PaymentRefused("bad_request", str(error)) from None


def parse_notice(body: Mapping[str, Any], decimals: int,
                 tenant_meters: Mapping[str, Sequence[str]]) -> PaymentNotice:
    """The notification in ``body`` (module docstring), or :class:`PaymentRefused`."""
    transaction_id = _text(body, "transaction_id", MAX_TRANSACTION_ID)
    channel = _text(body, "channel", MAX_CHANNEL, required=False) or "payment"
    amount = _amount(body.get("amount"), decimals, "amount")
    meter, tenant = body.get("meter"), body.get("tenant")
    if (meter is None) == (tenant is None):
        raise PaymentRefused("bad_request", 'name either "meter" or "tenant"')
    if meter is not None:
        if "split" in body:
            raise PaymentRefused("bad_request", '"split" goes with "tenant", not "meter"')
        return PaymentNotice(transaction_id, amount, channel,
                             (Part(_text(body, "meter", 128), amount),), None)
    tenant = _text(body, "tenant", 128)
    meters = tenant_meters.get(tenant)
    if not meters:
        raise PaymentRefused("unknown_tenant", f"no tenant {tenant!r} in this park")
    split = body.get("split")
    if split is None:
        return PaymentNotice(transaction_id, amount, channel, (Part(meters[0], amount),),
                             tenant)
    if not isinstance(split, dict) or not split or len(split) > MAX_SPLIT:
        raise PaymentRefused("bad_request", f'"split" must map 1 to {MAX_SPLIT} of the '
                                            'tenant\'s meters to amounts ({"M-1": "30.00"})')
    parts = []
    for meter_id, part in split.items():
        if meter_id not in meters:
            raise PaymentRefused("bad_request", f"meter {meter_id!r} is not tenant "
                                                f"{tenant!r}'s")
        parts.append(Part(meter_id, _amount(part, decimals, f"split[{meter_id!r}]")))
    if sum(part.amount for part in parts) != amount:
        raise PaymentRefused("bad_request", '"split" does not add up to "amount"')
    return PaymentNotice(transaction_id, amount, channel, tuple(parts), tenant)


def part_reference(key_id: str, notice: PaymentNotice, part: Part) -> str:
    """The journal's reference of one part: idempotent per provider and transaction."""
    base = f"{key_id}:{notice.transaction_id}"
    return base if len(notice.parts) == 1 else f"{base}:{part.meter_id}"
