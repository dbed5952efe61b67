"""Fakes of the providers' HTTP APIs, served for real on a loopback port.

Each fake is a starlette app on hypercorn's trio worker (as the park's own HTTP side runs), so
the adapters under test go through httpx, a socket and an HTTP parser exactly as in production.
The fakes check what the providers check and answer what the providers document; the Aliyun
fake recomputes every request's signature with its own encoder (the recipe Alibaba gives for
Java's ``URLEncoder``), written apart from the adapter's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import Framework
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@asynccontextmanager
async def open_fake(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL (``http://127.0.0.1:N``)."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(lambda task_status: serve(
            cast(Framework, app), config, shutdown_trigger=stop.wait, task_status=task_status))
        try:
            yield binds[0]
        finally:
            stop.set()


async def closed_port() -> str:
    """A loopback URL nothing listens on (bound, then closed)."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"


# -- Aliyun Dysmsapi ----------------------------------------------------------------------


def java_style_encode(value: str) -> str:
    """Alibaba's documented recipe: URLEncoder (form encoding), then ``+`` -> ``%20``,
    ``*`` -> ``%2A``, ``%7E`` -> ``~``."""
    return (urllib.parse.quote_plus(value, safe="")
            .replace("+", "%20").replace("*", "%2A").replace("%7E", "~"))


def expected_signature(method: str, params: dict[str, str], secret: str) -> tuple[str, str]:
    """(StringToSign, Signature) as the server computes them."""
    pairs = [f"{java_style_encode(k)}={java_style_encode(params[k])}" for k in sorted(params)]
    to_sign = method + "&" + java_style_encode("/") + "&" + java_style_encode("&".join(pairs))
    mac = hmac.new((secret + "&").encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha1)
    return to_sign, base64.b64encode(mac.digest()).decode()


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_VARIABLE = re.compile(r"\$\{(\w+)\}")
COMMON = ("AccessKeyId", "Action", "Format", "RegionId", "SignatureMethod", "SignatureNonce",
          "SignatureVersion", "Timestamp", "Version", "Signature")


@attrs.define
class SentSms:
    phone: str
    sign_name: str
    template_code: str
    template_param: dict[str, str]
    out_id: str
    text: str
    """The message as the template renders it."""


@attrs.define
class FakeAliyun:
    """Dysmsapi's SendSms. ``keys``: AccessKeyId -> secret; ``templates``: code -> text with
    ``${variables}``; numbers in ``refused`` are illegal, those in ``limited`` hit the
    per-number rate limit; ``outages`` answers the next N requests with a bare 503."""

    keys: dict[str, str]
    templates: dict[str, str]
    signs: set[str]
    refused: set[str] = attrs.Factory(set)
    limited: set[str] = attrs.Factory(set)
    outages: int = 0
    retry_after: str | None = None
    delay_s: float = 0.0
    sent: list[SentSms] = attrs.Factory(list)
    requests: list[dict[str, str]] = attrs.Factory(list)
    nonces: set[str] = attrs.Factory(set)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self.send_sms, methods=["POST"])])

    @staticmethod
    def answer(code: str, message: str, status: int = 200, **extra: str) -> JSONResponse:
        return JSONResponse({"RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990",
                             "Code": code, "Message": message, **extra}, status_code=status)

    async def send_sms(self, request: Request) -> Response:
        if self.delay_s:
            await trio.sleep(self.delay_s)
        if self.outages:
            self.outages -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return PlainTextResponse("Service Temporarily Unavailable", 503, headers=headers)
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return self.answer("InvalidParameter", "form body expected", 400)
        pairs = urllib.parse.parse_qsl((await request.body()).decode("ascii"),
                                       keep_blank_values=True, strict_parsing=True)
        params = dict(pairs)
        self.requests.append(params)
        if len(params) != len(pairs):
            return self.answer("InvalidParameter", "a parameter appears twice", 400)
        for name in COMMON:
            if name not in params:
                return self.answer(f"Missing{name}", f"{name} is mandatory for this action.", 400)
        fixed = {"Action": "SendSms", "Format": "JSON", "Version": "2017-05-25",
                 "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0"}
        for name, value in fixed.items():
            if params[name] != value:
                return self.answer(f"Invalid{name}", f"Specified parameter {name} is not valid.",
                                   400)
        if not _TIMESTAMP.fullmatch(params["Timestamp"]):
            return self.answer("InvalidTimeStamp.Format",
                               "Specified time stamp or date value is not well formatted.", 400)
        sent_at = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if abs(datetime.now(UTC) - sent_at) > timedelta(minutes=15):
            return self.answer("InvalidTimeStamp.Expired",
                               "Specified time stamp or date value is expired.", 400)
        secret = self.keys.get(params["AccessKeyId"])
        if secret is None:
            return self.answer("InvalidAccessKeyId.NotFound", "Specified access key is not found.",
                               404)
        signed = {k: v for k, v in params.items() if k != "Signature"}
        to_sign, wanted = expected_signature(request.method, signed, secret)
        if not hmac.compare_digest(wanted, params["Signature"]):
            return self.answer("SignatureDoesNotMatch",
                               "Specified signature is not matched with our calculation. "
                               f"server string to sign is:{to_sign}", 400)
        if params["SignatureNonce"] in self.nonces:
            return self.answer("SignatureNonceUsed", "Specified signature nonce was used already.",
                               400)
        self.nonces.add(params["SignatureNonce"])
        return self.business(params)

    def business(self, params: dict[str, str]) -> Response:
        if params.get("SignName") not in self.signs:
            return self.answer("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        text = self.templates.get(params.get("TemplateCode", ""))
        if text is None:
            return self.answer("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        phone = params.get("PhoneNumbers", "")
        if phone in self.refused or not re.fullmatch(r"\d{7,15}", phone):
            return self.answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if phone in self.limited:
            return self.answer("isv.BUSINESS_LIMIT_CONTROL", "触发号码天级流控Permits:40")
        try:
            values = json.loads(params.get("TemplateParam", "{}"))
        except ValueError:
            return self.answer("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            return self.answer("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        missing = [name for name in _VARIABLE.findall(text) if name not in values]
        if missing:
            return self.answer("isv.TEMPLATE_MISSING_PARAMETERS", f"模版缺少变量: {missing[0]}")
        self.sent.append(SentSms(phone, params["SignName"], params["TemplateCode"], values,
                                 params.get("OutId", ""),
                                 _VARIABLE.sub(lambda m: values[m.group(1)], text)))
        return self.answer("OK", "OK", BizId=f"9006197{len(self.sent):05d}^0")


# -- WeChat Official Account --------------------------------------------------------------


@attrs.define
class SentTemplate:
    touser: str
    template_id: str
    data: dict[str, str]
    token: str


@attrs.define
class FakeWechat:
    """``cgi-bin/token`` and ``cgi-bin/message/template/send`` of one official account.

    Only the latest token is valid (``rotate`` forgets it, as when another process fetched one);
    ``followers`` are the openids that may be sent to; ``scripted`` errcodes answer the next
    sends (after the token check), ``outages`` the next N sends with a bare 502."""

    app_id: str
    app_secret: str
    templates: dict[str, set[str]]
    """Template id -> the keys its content uses."""
    followers: set[str]
    expires_in: int = 7200
    scripted: list[tuple[int, str]] = attrs.Factory(list)
    outages: int = 0
    token_fetches: int = 0
    tokens_seen: list[str] = attrs.Factory(list)
    current: str | None = None
    sent: list[SentTemplate] = attrs.Factory(list)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/cgi-bin/token", self.token, methods=["GET"]),
            Route("/cgi-bin/message/template/send", self.send, methods=["POST"]),
        ])

    def rotate(self) -> None:
        self.current = None

    @staticmethod
    def error(errcode: int, errmsg: str) -> JSONResponse:
        return JSONResponse({"errcode": errcode, "errmsg": f"{errmsg} rid: 6385c6c1-0fcadca1"})

    async def token(self, request: Request) -> Response:
        query = request.query_params
        if query.get("grant_type") != "client_credential":
            return self.error(40002, "invalid grant_type")
        if query.get("appid") != self.app_id:
            return self.error(40013, "invalid appid")
        if query.get("secret") != self.app_secret:
            return self.error(40125, "invalid appsecret")
        self.token_fetches += 1
        self.current = f"ACCESS_TOKEN_{self.token_fetches}"
        return JSONResponse({"access_token": self.current, "expires_in": self.expires_in})

    async def send(self, request: Request) -> Response:
        if self.outages:
            self.outages -= 1
            return PlainTextResponse("502 Bad Gateway", 502)
        token = request.query_params.get("access_token", "")
        self.tokens_seen.append(token)
        if not token:
            return self.error(41001, "access_token missing")
        if token != self.current:
            return self.error(40001, "invalid credential, access_token is invalid or not latest")
        if self.scripted:
            return self.error(*self.scripted.pop(0))
        try:
            body: Any = json.loads(await request.body())
        except ValueError:
            return self.error(47001, "data format error")
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            return self.error(47001, "data format error")
        keys = self.templates.get(body.get("template_id", ""))
        if keys is None:
            return self.error(40037, "invalid template_id")
        if body.get("touser") not in self.followers:
            return self.error(43004, "require subscribe")
        data: dict[str, str] = {}
        for key, item in body["data"].items():
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                return self.error(47003, f"argument invalid! data.{key}.value invalid")
            data[key] = item["value"]
        if missing := sorted(keys - data.keys()):
            return self.error(47003, f"argument invalid! data.{missing[0]}.value empty")
        self.sent.append(SentTemplate(body["touser"], body["template_id"], data, token))
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": 200228332 + len(self.sent)})
