"""Webhook notices: a signed JSON ``POST`` to the tenant's URL (CONTRACT.md section 7).

The body is ``{"id", "tenant", "meter", "kind", "balance", "ts", ...}``: the notice's id (the
same on every retry, so a receiver that has seen it can answer 200 and drop it), its values,
and ``message``, the short text in the tenant's language. It is signed exactly like a payment
notification (``protocols.http.payments.signature``): ``X-Timestamp`` (unix seconds) and
``X-Signature``, hex HMAC-SHA256 with ``[notify.webhook] secret`` over timestamp + "." + body.

Answers: any 2xx is delivered. 408, 425, 429 and 5xx, a timeout or a connection failure are
retried (a ``Retry-After`` in seconds is passed on). Any other 4xx is the receiver refusing
this notice for good (a URL that does not exist, a signature it will not accept): dead, with
the status and the first 200 characters of its answer, for the dead-letter list.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Final

from protocols.http.payments import signature
from protocols.notify.channel import DELIVERED, Message, Outcome
from protocols.notify.http_client import HttpClient, HttpFailure

RETRIED_STATUSES: Final = frozenset({408, 425, 429})


def webhook_body(message: Message) -> bytes:
    """The JSON a receiver gets (keys sorted, so a retry's body is byte-identical)."""
    ts = dt.datetime.fromtimestamp(message.ts_ms / 1000, dt.UTC)
    payload: dict[str, object] = {
        **message.fields,
        "id": message.notice_id,
        "tenant": message.tenant,
        "meter": message.meter,
        "kind": message.kind,
        "balance": message.fields.get("balance"),
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "language": message.language,
        "message": message.body,
    }
    return json.dumps(payload, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode()


def _retry_after(value: str) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class WebhookChannel:
    name = "webhook"

    def __init__(self, client: HttpClient, secret: str, timeout_s: float,
                 now_s: Callable[[], float] = time.time) -> None:
        self._client = client
        self._secret = secret.encode()
        self._timeout = timeout_s
        self._now_s = now_s

    async def send(self, message: Message) -> Outcome:
        body = webhook_body(message)
        timestamp = str(int(self._now_s()))
        headers = [
            ("Content-Type", "application/json; charset=utf-8"),
            ("X-Timestamp", timestamp),
            ("X-Signature", signature(self._secret, timestamp, body)),
            ("X-Notice-Id", message.notice_id),
        ]
        try:
            answer = await self._client.post(message.address, body, headers, self._timeout)
        except HttpFailure as error:
            return Outcome("retry", str(error))
        status = answer.status
        if 200 <= status < 300:
            return DELIVERED
        detail = f"HTTP {status}: {answer.body[:200].decode('utf-8', 'replace')}"
        if status in RETRIED_STATUSES or status >= 500:
            return Outcome("retry", detail, _retry_after(answer.headers.get("retry-after", "")))
        return Outcome("dead", detail)

    async def aclose(self) -> None:
        """The client is shared; its owner closes it."""
