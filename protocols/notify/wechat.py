"""WeChat Official Account template messages: one notice as one ``message/template/send``.

Theory of operation
-------------------
Every call to the Official Account API carries an ``access_token``, fetched with the account's
AppID and AppSecret from ``GET {endpoint}/cgi-bin/token?grant_type=client_credential&appid=..
&secret=..`` (``{"access_token": ..., "expires_in": 7200}``). Fetching one replaces the one before
(WeChat keeps the old one valid for a few minutes), and fetches are counted against a daily
quota, so the adapter keeps one token for the whole process: fetched on first need, reused until
``expires_in`` minus :data:`TOKEN_MARGIN_S`, and fetched by one task at a time (a lock; whoever
waited finds the fresh one). A send answered 40001 / 40014 / 42001 (the token is invalid or
expired: another process fetched a newer one, or WeChat rotated it) drops that token, fetches a
new one and sends once more.

A send is ``POST {endpoint}/cgi-bin/message/template/send?access_token=..`` with JSON
``{"touser": openid, "template_id": .., "data": {key: {"value": ..}}}``. The keys are the
template's (``thing1``, ``amount2``, ``keyword1`` ...: WeChat's template library fixes them), so a
kind may map its template's keys to the notice's fields (``data_keys``); a kind without a map
sends every field under its own name (templates written with ``{{balance.DATA}}``). The answer is
``{"errcode": 0, "errmsg": "ok", "msgid": ..}`` when sent; :data:`ERRCODE_OUTCOMES` classifies
the rest. An errcode it does not know is ``dead`` (an operator should see it), the network
failing or an HTTP 5xx ``retry``.

The token and the secret never appear in an outcome's detail or a repr.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import httpx
import trio

from protocols.notify.channel import Message, Outcome, OutcomeKind

DEFAULT_ENDPOINT: Final = "https://api.weixin.qq.com"
TOKEN_MARGIN_S: Final = 300.0
"""A token is renewed this long before WeChat says it expires (the docs' overlap window)."""

TOKEN_ERRCODES: Final = frozenset({40001, 40014, 42001})
"""The token is invalid or expired: fetch a new one and send again."""

_CONFIG: Final = "configuration: "


@attrs.frozen
class ErrcodeOutcome:
    kind: OutcomeKind
    why: str


ERRCODE_OUTCOMES: Final[Mapping[int, ErrcodeOutcome]] = {
    0: ErrcodeOutcome("delivered", "sent"),
    # This recipient or this message: never deliverable as it is.
    43004: ErrcodeOutcome("dead", "the recipient does not follow the official account"),
    43101: ErrcodeOutcome("dead", "the recipient refuses messages from the account"),
    40003: ErrcodeOutcome("dead", "not an openid of this official account"),
    47003: ErrcodeOutcome("dead", "a template value is refused (its kind or its length)"),
    47001: ErrcodeOutcome("dead", "the request body is malformed"),
    # The account's settings: an operator must act.
    40037: ErrcodeOutcome("dead", _CONFIG + "no such template id: check "
                                            "[notify.wechat.templates]"),
    40036: ErrcodeOutcome("dead", _CONFIG + "the template id is malformed: check "
                                            "[notify.wechat.templates]"),
    48001: ErrcodeOutcome("dead", _CONFIG + "the account may not send template messages"),
    40164: ErrcodeOutcome("dead", _CONFIG + "the server's address is not in the account's IP "
                                            "whitelist"),
    # Passing.
    -1: ErrcodeOutcome("retry", "WeChat is busy"),
    45009: ErrcodeOutcome("retry", "the account's daily API quota is spent"),
    45011: ErrcodeOutcome("retry", "the per-minute API quota is spent"),
}
"""What each documented ``errcode`` of a send means for the notice (docs/notify-providers.md)."""

TOKEN_ERRCODE_OUTCOMES: Final[Mapping[int, ErrcodeOutcome]] = {
    40001: ErrcodeOutcome("dead", _CONFIG + "the AppSecret is wrong: check app_secret in "
                                            "[notify.wechat]"),
    40125: ErrcodeOutcome("dead", _CONFIG + "the AppSecret is wrong: check app_secret in "
                                            "[notify.wechat]"),
    40013: ErrcodeOutcome("dead", _CONFIG + "no such AppID: check app_id in [notify.wechat]"),
    40164: ErrcodeOutcome("dead", _CONFIG + "the server's address is not in the account's IP "
                                            "whitelist"),
    -1: ErrcodeOutcome("retry", "WeChat is busy"),
    45009: ErrcodeOutcome("retry", "the account's daily token quota is spent"),
}
"""What an ``errcode`` of the token request means for the notice that needed the token."""

MINUTE_QUOTA_WAIT_S: Final = 60.0


def _errcode(answer: Mapping[str, Any]) -> int | None:
    """The answer's errcode (0 when it has none, as a successful send may), None when it is
    not an integer."""
    errcode = answer.get("errcode", 0)
    return errcode if isinstance(errcode, int) and not isinstance(errcode, bool) else None


class _NoToken(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


@attrs.frozen
class TokenStatistics:
    fetches: int
    """Tokens fetched since start (each counts against the account's daily quota)."""
    valid_for_s: float | None
    """How long the cached token is still used, or None without one."""


class WechatTemplates:
    """The ``wechat`` channel: template messages of one official account.

    ``data_keys`` maps a kind to ``{template key: notice field}``; ``clock`` is monotonic
    seconds (trio's, so tests can jump it). ``client``: as for :class:`AliyunSms`."""

    name = "wechat"

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        templates: Mapping[str, str],
        data_keys: Mapping[str, Mapping[str, str]] | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._app_id = app_id
        self._app_secret = app_secret
        self._templates = dict(templates)
        self._data_keys = {kind: dict(keys) for kind, keys in (data_keys or {}).items()}
        self._endpoint = endpoint.rstrip("/")
        self._timeout_s = timeout_s
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._clock = clock
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = trio.Lock()
        self._fetches = 0

    def __repr__(self) -> str:  # never the secret or the token
        return f"WechatTemplates(endpoint={self._endpoint!r}, app_id={self._app_id!r})"

    def statistics(self) -> TokenStatistics:
        left = self._token_until - self._clock() if self._token is not None else None
        return TokenStatistics(self._fetches, left if left is None or left > 0 else None)

    def payload(self, message: Message, template_id: str) -> dict[str, Any]:
        keys = self._data_keys.get(message.kind)
        if keys is None:
            values = dict(message.fields)
        else:
            values = {key: message.fields.get(field, "") for key, field in keys.items()}
        return {"touser": message.address, "template_id": template_id,
                "data": {key: {"value": value} for key, value in values.items()}}

    async def send(self, message: Message) -> Outcome:
        template_id = self._templates.get(message.kind)
        if template_id is None:
            return Outcome("dead", f"{_CONFIG}no WeChat template for kind {message.kind} in "
                                   "[notify.wechat.templates]")
        if keys := self._data_keys.get(message.kind):
            missing = sorted(field for field in keys.values() if field not in message.fields)
            if missing:
                return Outcome("dead", f"the {message.kind} notice has no {', '.join(missing)} "
                                       "for its WeChat template")
        payload = self.payload(message, template_id)
        try:
            token = await self._current_token()
            answer = await self._post_template(token, payload)
            if isinstance(answer, dict) and _errcode(answer) in TOKEN_ERRCODES:
                self._drop_token(token)
                token = await self._current_token()
                answer = await self._post_template(token, payload)
        except _NoToken as failed:
            return failed.outcome
        if isinstance(answer, Outcome):
            return answer
        return self._send_outcome(answer)

    async def _post_template(self, token: str, payload: dict[str, Any]) -> dict[str, Any] | Outcome:
        return await self._call("POST", "/cgi-bin/message/template/send",
                                {"access_token": token}, payload)

    def _send_outcome(self, answer: dict[str, Any]) -> Outcome:
        errcode = _errcode(answer)
        errmsg = answer.get("errmsg", "")
        said = f"errcode {errcode}: {errmsg}" if errmsg else f"errcode {errcode}"
        if errcode == 0:
            msgid = answer.get("msgid")
            return Outcome("delivered", f"msgid {msgid}" if msgid is not None else said)
        if errcode in TOKEN_ERRCODES:
            return Outcome("retry", f"{said} (a fresh token was refused too)")
        known = ERRCODE_OUTCOMES.get(errcode) if errcode is not None else None
        if known is None:
            return Outcome("dead", f"{said} (not a documented errcode)")
        wait = MINUTE_QUOTA_WAIT_S if errcode == 45011 else None
        return Outcome(known.kind, f"{said} ({known.why})", wait)

    # -- the access token -----------------------------------------------------------------

    def _drop_token(self, token: str) -> None:
        # Only the one that was refused: a task may have fetched a newer one meanwhile.
        if self._token == token:
            self._token = None

    async def _current_token(self) -> str:
        if self._token is not None and self._clock() < self._token_until:
            return self._token
        async with self._token_lock:
            if self._token is not None and self._clock() < self._token_until:
                return self._token
            self._token = None
            answer = await self._call("GET", "/cgi-bin/token", {
                "grant_type": "client_credential", "appid": self._app_id,
                "secret": self._app_secret})
            if isinstance(answer, Outcome):
                raise _NoToken(attrs.evolve(answer, detail=f"access token: {answer.detail}"))
            token = answer.get("access_token")
            if not isinstance(token, str) or not token:
                raise _NoToken(self._token_refused(answer))
            expires_in = answer.get("expires_in", 7200)
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 7200.0
            keep = lifetime - TOKEN_MARGIN_S if lifetime > 2 * TOKEN_MARGIN_S else lifetime / 2
            self._token = token
            self._token_until = self._clock() + keep
            self._fetches += 1
            return token

    def _token_refused(self, answer: dict[str, Any]) -> Outcome:
        errcode = _errcode(answer)
        said = f"access token: errcode {answer.get('errcode')}: {answer.get('errmsg', '')}"
        known = TOKEN_ERRCODE_OUTCOMES.get(errcode) if errcode is not None else None
        if known is None:
            return Outcome("dead", f"{said} (not a documented errcode)")
        return Outcome(known.kind, f"{said} ({known.why})")

    # -- HTTP -----------------------------------------------------------------------------

    async def _call(self, method: str, path: str, query: dict[str, str],
                    body: dict[str, Any] | None = None) -> dict[str, Any] | Outcome:
        """The JSON object WeChat answered, or the outcome when it did not answer one."""
        try:
            response = await self._client.request(
                method, self._endpoint + path, params=query, json=body,
                timeout=self._timeout_s)
        except httpx.TimeoutException as exc:
            return Outcome("retry", f"no answer within {self._timeout_s:g} s "
                                    f"({type(exc).__name__})")
        except httpx.RequestError as exc:
            # The exception's text names the host, never the URL (which holds the secret).
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if status >= 500 or status in (408, 429):
            return Outcome("retry", f"HTTP {status}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            return Outcome("dead", f"{_CONFIG}HTTP {status} without a WeChat answer from "
                                   f"{self._endpoint} (check endpoint in [notify.wechat])")
        return answer

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
