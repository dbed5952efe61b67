"""Aliyun (Alibaba Cloud) SMS: one notice as one Dysmsapi ``SendSms`` call.

Theory of operation
-------------------
``SendSms`` is an RPC-style Alibaba Cloud API: every value travels as a form parameter, the
common ones (``AccessKeyId``, ``Action``, ``Format``, ``RegionId``, ``SignatureMethod``,
``SignatureNonce``, ``SignatureVersion``, ``Timestamp``, ``Version``) next to the call's own
(``PhoneNumbers``, ``SignName``, ``TemplateCode``, ``TemplateParam``, ``OutId``), and the request
is signed with signature version 1.0:

1. percent-encode every name and value as RFC 3986 asks (UTF-8; only ``A-Z a-z 0-9 - _ . ~``
   left as they are, so a space is ``%20``, ``*`` is ``%2A`` and ``~`` stays ``~``);
2. sort the parameters by encoded name and join them as ``name=value`` with ``&``: the
   canonicalized query;
3. ``StringToSign = METHOD + "&" + enc("/") + "&" + enc(canonicalized query)``;
4. ``Signature = base64(HMAC-SHA1(key=AccessKeySecret + "&", StringToSign))``, sent as one more
   parameter.

The functions that do this are pure (:func:`percent_encode`, :func:`canonicalized_query`,
:func:`string_to_sign`, :func:`signature`) and checked against Alibaba's published examples.
The request is a ``POST`` with the parameters as an ``application/x-www-form-urlencoded`` body
(encoded by step 1, so the body is the canonicalized query plus the signature).

The answer is JSON: ``{"Code": "OK", "BizId": ..., "RequestId": ...}`` when the message was
accepted; otherwise ``Code`` names the refusal, with an HTTP 4xx for gateway errors (a bad
signature, throttling) and 200 for most of the SMS service's own. :data:`CODE_OUTCOMES` turns a
code into ``delivered`` / ``retry`` / ``dead``; a code it does not know is ``retry`` when the
platform's (``isp.``, ``Throttling``) or under a 5xx, else ``dead`` (so an operator sees it).
The network failing, a timeout or an HTTP 5xx without a known code is ``retry``.

``OutId`` is the notice id, so the provider's delivery receipts (``SmsReport``) can be matched to
the notice; the nonce is a fresh UUID per request, so a retry is never taken for a replay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

import attrs
import httpx

from protocols.notify.channel import Message, Outcome, OutcomeKind

API_VERSION: Final = "2017-05-25"
SIGNATURE_METHOD: Final = "HMAC-SHA1"
SIGNATURE_VERSION: Final = "1.0"
DEFAULT_ENDPOINT: Final = "https://dysmsapi.aliyuncs.com/"

_E164: Final = re.compile(r"\+([1-9]\d{6,14})")


# -- signature version 1.0 (pure) ---------------------------------------------------------


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding of UTF-8, as Alibaba's signature wants it: unreserved
    characters (``A-Z a-z 0-9 - _ . ~``) as they are, everything else ``%XY``."""
    return urllib.parse.quote(value, safe="-_.~", encoding="utf-8")


def canonicalized_query(params: Mapping[str, str]) -> str:
    """The parameters (without ``Signature``), encoded, sorted by encoded name, joined."""
    encoded = sorted((percent_encode(k), percent_encode(v)) for k, v in params.items())
    return "&".join(f"{k}={v}" for k, v in encoded)


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method}&{percent_encode('/')}&{percent_encode(canonicalized_query(params))}"


def signature(method: str, params: Mapping[str, str], access_key_secret: str) -> str:
    digest = hmac.new(f"{access_key_secret}&".encode(),
                      string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC to the second, ``YYYY-MM-DDThh:mm:ssZ``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def provider_number(e164: str) -> str | None:
    """The ``PhoneNumbers`` form of an E.164 number, or None when it is not one.

    SendSms takes a mainland number as its 11 digits (``+86``, ``86`` and ``0086`` prefixes
    are accepted too) and any other as country code and number without ``+`` or ``00``."""
    match = _E164.fullmatch(e164)
    if match is None:
        return None
    digits = match.group(1)
    return digits[2:] if digits.startswith("86") and len(digits) == 13 else digits


# -- what the answer means --------------------------------------------------------------

_CONFIG: Final = "configuration: "


@attrs.frozen
class CodeOutcome:
    kind: OutcomeKind
    why: str
    """What it means for us, after the provider's own words in the outcome's detail."""


def _dead(why: str) -> CodeOutcome:
    return CodeOutcome("dead", why)


def _config(why: str) -> CodeOutcome:
    return CodeOutcome("dead", _CONFIG + why)


def _retry(why: str) -> CodeOutcome:
    return CodeOutcome("retry", why)


CODE_OUTCOMES: Final[Mapping[str, CodeOutcome]] = {
    "OK": CodeOutcome("delivered", "accepted"),
    # This message can never go: the number, the values or the content.
    "isv.MOBILE_NUMBER_ILLEGAL": _dead("the phone number is not a valid one"),
    "isv.MOBILE_COUNT_OVER_LIMIT": _dead("too many phone numbers in one request"),
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED": _dead(
        "an international template cannot be sent to a mainland number"),
    "isv.TEMPLATE_MISSING_PARAMETERS": _dead("the notice lacks a variable the template uses"),
    "isv.TEMPLATE_PARAMS_ILLEGAL": _dead("a template variable's value is refused"),
    "isv.INVALID_PARAMETERS": _dead("a parameter is refused"),
    "isv.INVALID_JSON_PARAM": _dead("TemplateParam is not a JSON object of strings"),
    "isv.PARAM_LENGTH_LIMIT": _dead("a template variable's value is too long"),
    "isv.PARAM_NOT_SUPPORT_URL": _dead("a template variable may not hold a URL"),
    "isv.SMS_CONTENT_ILLEGAL": _dead("the content is forbidden"),
    "isv.BLACK_KEY_CONTROL_LIMIT": _dead("the number or the content is blacklisted"),
    # The account or its settings: every message would be refused until an operator acts.
    "isv.SMS_TEMPLATE_ILLEGAL": _config(
        "the template code does not exist, is not approved, or does not fit its variables: "
        "check [notify.sms.templates]"),
    "isv.SMS_SIGNATURE_ILLEGAL": _config(
        "the signature is not approved: check sign_name in [notify.sms]"),
    "isv.SMS_SIGN_ILLEGAL": _config("the signature is forbidden: check sign_name in [notify.sms]"),
    "isv.SIGN_STATE_ILLEGAL": _config("the signature is unavailable: check it in the console"),
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": _config(
        "a verification-code signature cannot send notices: use a general-purpose one"),
    "isv.SMS_TEST_NUMBER_LIMIT": _config(
        "a test signature and template send only to the test numbers bound in the console"),
    "isv.DENY_IP_RANGE": _config("the server's address is outside mainland China"),
    "isv.PRODUCT_UN_SUBSCRIPT": _config("the account has not activated SMS"),
    "isv.PRODUCT_UNSUBSCRIBE": _config("the account has not activated SMS"),
    "isv.ACCOUNT_NOT_EXISTS": _config("no such account: check access_key_id in [notify.sms]"),
    "isv.ACCOUNT_ABNORMAL": _config("the account is abnormal: see the console"),
    "isp.RAM_PERMISSION_DENY": _config(
        "the RAM user lacks SMS permission (AliyunDysmsFullAccess or dysms:SendSms)"),
    "Forbidden.RAM": _config("the RAM user lacks SMS permission"),
    "SignatureDoesNotMatch": _config(
        "the signature was refused: check access_key_secret in [notify.sms]"),
    "IncompleteSignature": _config("the signature was refused: check [notify.sms]"),
    "InvalidAccessKeyId.NotFound": _config(
        "no such AccessKey: check access_key_id in [notify.sms]"),
    "InvalidAccessKeyId.Inactive": _config("the AccessKey is disabled: enable or replace it"),
    # Passing: a limit, the balance, the platform. The same message can go later.
    "isv.BUSINESS_LIMIT_CONTROL": _retry("the per-number sending rate limit"),
    "isv.DAY_LIMIT_CONTROL": _retry("the account's daily sending limit (set in the console)"),
    "isv.MONTH_LIMIT_CONTROL": _retry("the account's monthly sending limit"),
    "isv.AMOUNT_NOT_ENOUGH": _retry("the account's balance is too low: top it up"),
    "isv.OUT_OF_SERVICE": _retry("the account is suspended for its balance: top it up"),
    "isp.SYSTEM_ERROR": _retry("the provider failed"),
    "InternalError": _retry("the provider failed"),
    "ServiceUnavailable": _retry("the provider is unavailable"),
    "Throttling": _retry("throttled"),
    "Throttling.User": _retry("throttled (calls per account)"),
    "Throttling.Api": _retry("throttled (calls to the API)"),
    "SignatureNonceUsed": _retry("the nonce was taken (a new one is drawn next time)"),
    "InvalidTimeStamp.Expired": _retry(
        "the server's clock is more than 15 minutes off: check its time synchronisation"),
}
"""What each documented ``Code`` means for the notice (docs/notify-providers.md)."""


def outcome_of(status: int, code: str, provider_message: str) -> Outcome:
    """The outcome of an answer with ``code`` (already parsed) and HTTP ``status``."""
    said = f"{code}: {provider_message}" if provider_message else code
    known = CODE_OUTCOMES.get(code)
    if known is not None:
        if known.kind == "delivered":
            return Outcome("delivered", said)
        return Outcome(known.kind, f"{said} ({known.why})")
    if code.startswith(("isp.", "Throttling")) or status >= 500:
        return Outcome("retry", f"{said} (HTTP {status}; not a documented code)")
    return Outcome("dead", f"{said} (HTTP {status}; not a documented code)")


def _json_object(response: httpx.Response) -> dict[str, object]:
    """The answer's JSON object, empty when it is not one."""
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


# -- the adapter --------------------------------------------------------------------------


class AliyunSms:
    """The ``sms`` channel through Aliyun's Dysmsapi.

    ``client`` is shared (its connection pool serves every channel of the delivery process);
    without one the adapter makes its own and :meth:`aclose` closes it. ``now`` and
    ``new_nonce`` are the clock and the nonce source (tests pass fixed ones)."""

    name = "sms"

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        templates: Mapping[str, str],
        endpoint: str = DEFAULT_ENDPOINT,
        region: str = "cn-hangzhou",
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_nonce: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self._sign_name = sign_name
        self._templates = dict(templates)
        self._endpoint = endpoint
        self._region = region
        self._timeout_s = timeout_s
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._now = now
        self._new_nonce = new_nonce

    def __repr__(self) -> str:  # never the secret
        return f"AliyunSms(endpoint={self._endpoint!r}, access_key_id={self._access_key_id!r})"

    def request_params(self, message: Message, template_code: str, phone: str) -> dict[str, str]:
        """Every parameter of the request but ``Signature``."""
        return {
            "AccessKeyId": self._access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": self._region,
            "SignatureMethod": SIGNATURE_METHOD,
            "SignatureNonce": self._new_nonce(),
            "SignatureVersion": SIGNATURE_VERSION,
            "Timestamp": timestamp(self._now()),
            "Version": API_VERSION,
            "PhoneNumbers": phone,
            "SignName": self._sign_name,
            "TemplateCode": template_code,
            # Every value of the notice; the template uses those it names (${balance}).
            # Strings only: SendSms refuses other JSON values (isv.INVALID_JSON_PARAM).
            "TemplateParam": json.dumps({k: str(v) for k, v in sorted(message.fields.items())},
                                        ensure_ascii=False, separators=(",", ":")),
            "OutId": message.notice_id,
        }

    async def send(self, message: Message) -> Outcome:
        template_code = self._templates.get(message.kind)
        if template_code is None:
            return Outcome("dead", f"{_CONFIG}no SMS template for kind {message.kind} in "
                                   "[notify.sms.templates]")
        phone = provider_number(message.address)
        if phone is None:
            return Outcome("dead", f"not an E.164 phone number: {message.address!r}")
        params = self.request_params(message, template_code, phone)
        params["Signature"] = signature("POST", params, self._access_key_secret)
        body = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items())
        try:
            response = await self._client.post(
                self._endpoint, content=body.encode("ascii"), timeout=self._timeout_s,
                headers={"Content-Type": "application/x-www-form-urlencoded",
                         "Accept": "application/json"})
        except httpx.TimeoutException as exc:
            return Outcome("retry", f"no answer within {self._timeout_s:g} s "
                                    f"({type(exc).__name__})")
        except httpx.RequestError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        return self._outcome(response)

    def _outcome(self, response: httpx.Response) -> Outcome:
        status = response.status_code
        answer = _json_object(response)
        code = answer.get("Code")
        if not isinstance(code, str) or not code:
            snippet = response.text[:200]
            if status >= 500 or status in (408, 429):
                return Outcome("retry", f"HTTP {status}: {snippet}", _retry_after(response))
            # Not Dysmsapi answering: a wrong endpoint, a proxy's page.
            return Outcome("dead", f"{_CONFIG}HTTP {status} without an SMS answer from "
                                   f"{self._endpoint} (check endpoint in [notify.sms]): "
                                   f"{snippet}")
        provider_message = answer.get("Message")
        outcome = outcome_of(status, code,
                             provider_message if isinstance(provider_message, str) else "")
        if outcome.kind == "delivered":
            biz_id = answer.get("BizId")
            return Outcome("delivered", f"BizId {biz_id}" if biz_id else outcome.detail)
        if outcome.kind == "retry":
            return attrs.evolve(outcome, retry_after_s=_retry_after(response))
        return outcome

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
