"""Tenant notices' dead letters over the hub, in its own process and inline: an admin lists
them (a mailbox a real SMTP receiver refused) and tries them again, operators and viewers are
refused, and a malformed ``notice_retry`` is a ``bad_request`` that retries nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.notify_sinks import SmtpSink
from protocols.ws.protocol import NoticeList, NoticeRetry, ProtocolError, parse_frame
from server.config import ParkConfig
from tests.notify.parks import wait_for
from tests.ws.client import HubClient, connect_and_login
from tests.ws.parks import hub_park_toml, open_hub

REFUSED = "energy@acme.example"


def notices_toml(smtp_port: int) -> str:
    return f"""
[notify]
retry = ["100ms", "200ms"]
per_hour = 0

[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "park@example.com"

[tenants.acme]
name = "ACME Tools Ltd"
language = "en"
emails = ["{REFUSED}"]
"""


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(refuse=frozenset({REFUSED}))
    sink.start()
    yield sink
    sink.stop()


def test_notice_frames_parse_and_a_retry_must_name_its_notice() -> None:
    assert parse_frame('{"type": "notices", "id": 3}', max_bytes=1024) == NoticeList(3)
    assert parse_frame('{"type": "notice_retry", "id": "r1", "notice": "receipt/p"}',
                       max_bytes=1024) == NoticeRetry("r1", "receipt/p")
    assert parse_frame('{"type": "notice_retry", "id": "r1", "notice": ""}',
                       max_bytes=1024) == NoticeRetry("r1", "")
    for bad, words in [('{"type": "notice_retry", "id": "r1"}', '"notice"'),
                       ('{"type": "notice_retry", "id": "r1", "notice": null}', '"notice"'),
                       ('{"type": "notice_retry", "notice": "x"}', '"id"'),
                       ('{"type": "notice_retry", "id": 5, "notice": "x"}', '"id"')]:
        with pytest.raises(ProtocolError) as refused:
            parse_frame(bad, max_bytes=1024)
        assert refused.value.code == "bad_request" and words in str(refused.value), bad


async def wait_for_dead(admin: HubClient, count: int) -> dict[str, Any]:
    """The ``notices`` answer once it counts ``count`` dead letters."""
    with trio.fail_after(20):
        while True:
            answer, _ = await admin.ask({"type": "notices", "id": "n"})
            assert answer["type"] == "notices", answer
            if answer["dead"] == count:
                return answer
            await trio.sleep(0.05)


@pytest.mark.parametrize("isolation", ["process", "inline"])
async def test_an_admin_lists_and_retries_dead_letters_over_the_hub(
        tmp_path: Path, smtp: SmtpSink, isolation: str) -> None:
    config = ParkConfig.from_toml_text(
        hub_park_toml(tmp_path / "park", hub_keys=f'isolation = "{isolation}"')
        + notices_toml(smtp.port), "hub.toml")
    async with open_hub(config) as (_park, services):
        operator = await connect_and_login(services.hub_url, "op", "op-secret")
        topped, _ = await operator.ask({"type": "topup", "id": "pay-1", "meter": "M-0",
                                        "amount": "10.00"})
        assert topped["type"] == "ack", topped
        admin = await connect_and_login(services.hub_url, "root", "root-secret")
        listed = await wait_for_dead(admin, 1)
        assert listed["id"] == "n"
        [letter] = listed["dead_letters"]
        assert (letter["notice"], letter["channel"], letter["address"], letter["attempts"]) == (
            "receipt/pay-1", "email", REFUSED, 1)
        assert letter["error"].startswith("SMTP 550"), letter
        assert listed["delivery_running"] is True and listed["raised"] == 1

        viewer = await connect_and_login(services.hub_url, "eve", "eve-secret")
        for client in (operator, viewer):
            refused, _ = await client.ask({"type": "notices", "id": "n-x"})
            assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
            not_done, _ = await client.ask({"type": "notice_retry", "id": "r-x",
                                            "notice": "receipt/pay-1"})
            assert (not_done["type"], not_done["code"]) == ("error", "forbidden"), not_done
        forgot, _ = await admin.ask({"type": "notice_retry", "id": "r-0"})
        assert (forgot["type"], forgot["code"]) == ("error", "bad_request"), forgot
        assert (await wait_for_dead(admin, 1))["dead_letters"] == [letter]

        smtp.refuse = frozenset()
        retried, _ = await admin.ask({"type": "notice_retry", "id": "r-1", "notice": ""})
        assert retried == {"type": "notice_retry", "id": "r-1", "notice": "",
                           "status": "accepted"}
        await wait_for(lambda: [m.notice_id for m in smtp.messages()] == ["receipt/pay-1"])
        assert (await wait_for_dead(admin, 0))["dead_letters"] == []
        assert [m.body["To"] for m in smtp.messages()] == [REFUSED]
