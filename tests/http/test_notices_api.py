"""Tenant notices' dead letters over the HTTP API (a real hypercorn server, a real delivery
process, a real SMTP receiver on loopback): an admin sees the mailbox the receiver refused,
operators and viewers are refused, and "try again" delivers it once the receiver takes it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from bench.notify_sinks import SmtpSink, WebhookSink
from tests.http.harness import ADMIN, OPERATOR, VIEWER, WebPark, open_web_park
from tests.http.test_openapi import check_answer
from tests.notify.parks import SECRET, contacts_toml, wait_for

REFUSED = "energy@acme.example"  # tenant t1's (meter M-1); its cfo@ address takes receipts


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(refuse=frozenset({REFUSED}))
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


async def notices(web: WebPark, auth: tuple[str, str] = ADMIN) -> httpx.Response:
    answer = await web.client.get("/api/notices", auth=auth)
    check_answer("get", "/api/notices", answer)
    return answer


async def retry(web: WebPark, body: Any, auth: tuple[str, str] = ADMIN) -> httpx.Response:
    answer = await web.client.post("/api/notices/retry", auth=auth, json=body)
    check_answer("post", "/api/notices/retry", answer)
    return answer


async def wait_for_view(web: WebPark, condition: Any) -> dict[str, Any]:
    """The view once ``condition(view)`` holds (the delivery process's figures come from its
    own process, twice a second)."""
    seen: dict[str, Any] = {}

    async def check() -> bool:
        seen.update((await notices(web)).json())
        return bool(condition(seen))

    with trio.fail_after(20):
        while not await check():
            await trio.sleep(0.05)
    return seen


def mailed_to(smtp: SmtpSink, address: str) -> list[str]:
    return [m.notice_id for m in smtp.messages() if m.body["To"] == address]


async def test_an_admin_sees_a_refused_mailbox_and_its_retry_is_delivered(
        tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    async with open_web_park(tmp_path / "park",
                             extra_toml=contacts_toml(smtp.port, webhook.url())) as web:
        before = await wait_for_view(web, lambda v: v["delivery_running"])
        assert (before["dead"], before["dead_letters"], before["pending"]) == (0, [], 0)

        topped = await web.client.post("/api/topups", auth=OPERATOR, json={
            "id": "pay-1", "meter": "M-1", "amount": "10.00"})
        assert topped.status_code == 200, topped.text
        await wait_for(lambda: mailed_to(smtp, "cfo@acme.example") == ["receipt/pay-1"])
        # (the dead letter is read from the store; the figures come twice a second)
        view = await wait_for_view(web, lambda v: v["dead"] == 1 and v["delivered"] == 1)
        [letter] = view["dead_letters"]
        assert (letter["notice"], letter["channel"], letter["address"], letter["attempts"]) == (
            "receipt/pay-1", "email", REFUSED, 1)
        assert letter["error"].startswith("SMTP 550"), letter
        assert letter["since"].endswith("Z") and letter["since"][:4] >= "2025"
        assert (view["raised"], view["written"]) == (1, 1)  # one receipt, two mailboxes
        assert view["waiting_for_storage"] == 0 and view["pending"] == 0

        for who in (OPERATOR, VIEWER):
            refused = await notices(web, who)
            assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
            not_done = await retry(web, {"id": "r-op", "notice": "receipt/pay-1"}, who)
            assert (not_done.status_code, not_done.json()["error"]) == (403, "forbidden")
        for bad in ({"id": "r-1"}, {"id": "r-1", "notice": 7}, {"notice": "receipt/pay-1"},
                    {"id": "", "notice": ""}):
            answer = await retry(web, bad)
            assert (answer.status_code, answer.json()["error"]) == (400, "bad_request"), bad
        not_json = await web.client.post("/api/notices/retry", auth=ADMIN, content=b"[1")
        check_answer("post", "/api/notices/retry", not_json)
        assert not_json.status_code == 400
        # Nothing above touched the dead letter, and it stays dead while the mailbox refuses.
        assert (await notices(web)).json()["dead"] == 1
        assert mailed_to(smtp, REFUSED) == []

        smtp.refuse = frozenset()  # the tenant's mailbox exists now
        accepted = await retry(web, {"id": "retry-1", "notice": "receipt/pay-1"})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"id": "retry-1", "notice": "receipt/pay-1",
                                   "status": "accepted"}
        await wait_for(lambda: mailed_to(smtp, REFUSED) == ["receipt/pay-1"])
        after = await wait_for_view(web, lambda v: v["delivered"] == 2)
        assert (after["dead"], after["pending"], after["dead_letters"]) == (0, 0, [])
        await trio.sleep(0.3)  # delivered once: the retry is not sent a second time
        assert mailed_to(smtp, REFUSED) == ["receipt/pay-1"]

        audit = (await web.client.get("/api/audit", auth=ADMIN)).json()["entries"]
        retries = [(e["user"], e["result"], e["reference"], e["code"]) for e in audit
                   if e["command"] == "notice_retry"]
        assert ("admin", "accepted", "retry-1", "") in retries
        assert ("op", "refused", "r-op", "forbidden") in retries


async def test_every_dead_letter_at_once_and_a_server_without_notices(
        tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    async with open_web_park(tmp_path / "park",
                             extra_toml=contacts_toml(smtp.port, webhook.url())) as web:
        for reference in ("pay-a", "pay-b"):
            topped = await web.client.post("/api/topups", auth=OPERATOR, json={
                "id": reference, "meter": "M-1", "amount": "5.00"})
            assert topped.status_code == 200, topped.text
        view = await wait_for_view(web, lambda v: v["dead"] == 2)
        assert [d["notice"] for d in view["dead_letters"]] == ["receipt/pay-a",
                                                              "receipt/pay-b"]
        smtp.refuse = frozenset()
        accepted = await retry(web, {"id": "retry-all", "notice": ""})
        assert accepted.json() == {"id": "retry-all", "notice": "", "status": "accepted"}
        await wait_for(lambda: sorted(mailed_to(smtp, REFUSED)) == ["receipt/pay-a",
                                                                  "receipt/pay-b"])
        assert (await wait_for_view(web, lambda v: v["dead"] == 0))["dead_letters"] == []

    async with open_web_park(tmp_path / "plain") as web:  # no tenant has a contact
        answer = await notices(web)
        assert (answer.status_code, answer.json()["error"]) == (400, "bad_request")
        assert "no tenant notices" in answer.json()["message"]
        refused = await notices(web, OPERATOR)
        assert refused.status_code == 403
