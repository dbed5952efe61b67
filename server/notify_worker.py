"""The delivery process: ``python -m server.notify_worker FD``, started by the server.

It reads the outbox (the park's LMDB environment, read-only), keeps its own environment of
deliveries (``persistence.deliveries``) and sends notices through the configured channels
(``server.delivery``). Sending is slow and talks to the outside world (a mail relay that hangs,
a webhook that answers in 30 s, thousands of TLS handshakes), so it runs here and not on the
control loop's thread: a delivery process that hangs or dies costs notices a delay, never a
relay decision (``server.notify_process`` restarts it).

The pipe (``server.edge_link``'s framing) carries: server -> process :data:`INIT` (the
settings, pickled: they are the server's own records), :data:`WAKE` (notices were committed),
:data:`REVIVE` ``(notice id)`` (an admin retries a dead letter); process -> server
:data:`~server.edge_link.READY`, :data:`~server.edge_link.REFUSED` (a template or a channel
cannot be set up), :data:`~server.edge_link.STATS` and :data:`~server.edge_link.LOG`.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import trio

from persistence.deliveries import open_deliveries
from persistence.readonly import open_store_readonly
from policies.notices import RateLimit
from protocols.notify.aliyun_sms import AliyunSms
from protocols.notify.channel import Channel
from protocols.notify.http_client import HttpClient
from protocols.notify.smtp import SmtpChannel
from protocols.notify.templates import TemplateError, load_templates
from protocols.notify.webhook import WebhookChannel
from protocols.notify.wechat import WechatTemplates
from server.config.records import NotifySection, TenantSection
from server.delivery import Deliverer
from server.edge_link import (
    INIT,
    READY,
    REFUSED,
    STATS,
    Link,
    LinkClosed,
    helper_socket,
    log_message,
    replace_log_handlers,
)

log = logging.getLogger("server.notify_worker")

WAKE: Final = "W"
REVIVE: Final = "V"
STATS_EVERY_S: Final = 0.5
NICENESS: Final = 10
USER_AGENT: Final = "wattkeeper-notify/1"


@attrs.frozen
class DeliverySettings:
    """What the delivery process needs of the park: the data directory, the zone for quiet
    hours, ``[notify]``, and the tenants that have contacts."""

    data_dir: str
    timezone: str
    notify: NotifySection
    tenants: Mapping[str, TenantSection]
    log_level: int = logging.INFO


def build_channels(notify: NotifySection, client: httpx.AsyncClient,
                   hooks: HttpClient) -> dict[str, Channel]:
    """One adapter per configured channel; the providers' share ``client``'s connections, the
    webhooks ``hooks``'."""
    channels: dict[str, Channel] = {}
    if notify.webhook is not None:
        channels["webhook"] = WebhookChannel(hooks, notify.webhook.secret,
                                             notify.webhook.timeout_s)
    if notify.smtp is not None:
        smtp = notify.smtp
        channels["email"] = SmtpChannel(smtp.host, smtp.port, smtp.sender,
                                        username=smtp.username, password=smtp.password,
                                        starttls=smtp.starttls, timeout_s=smtp.timeout_s)
    channels.update(provider_channels(notify, client))
    return channels


def provider_channels(notify: NotifySection, client: httpx.AsyncClient) -> dict[str, Channel]:
    """The SMS provider's and WeChat's adapters, when configured."""
    channels: dict[str, Channel] = {}
    if notify.sms is not None:
        sms = notify.sms  # provider "aliyun" is the one there is (SMS_PROVIDERS)
        channels["sms"] = AliyunSms(
            access_key_id=sms.access_key_id, access_key_secret=sms.access_key_secret,
            sign_name=sms.sign_name, templates=sms.templates, endpoint=sms.endpoint,
            region=sms.region, timeout_s=sms.timeout_s, client=client)
    if notify.wechat is not None:
        wechat = notify.wechat
        channels["wechat"] = WechatTemplates(
            app_id=wechat.app_id, app_secret=wechat.app_secret, templates=wechat.templates,
            data_keys=wechat.data_keys or None, endpoint=wechat.endpoint,
            timeout_s=wechat.timeout_s, client=client)
    return channels


class _LinkLogHandler(logging.Handler):
    def __init__(self, link: Link, token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self._link = link
        self._token = token
        self._queue: list[tuple[Any, ...]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._token.run_sync_soon(self._queue.append, log_message(record))
        except trio.RunFinishedError:
            pass
        except Exception:
            self.handleError(record)

    async def run(self) -> None:
        while True:
            await trio.sleep(0.05)
            queued, self._queue = self._queue, []
            for message in queued:
                await self._link.send(message)


def statistics_row(deliverer: Deliverer) -> tuple[Any, ...]:
    s = deliverer.statistics
    return (STATS, s.taken, s.delivered, s.retried, s.dead, s.pending, s.in_flight,
            dict(s.by_channel))


async def serve(link: Link) -> None:
    init = await link.receive()
    if init[0] != INIT:
        raise LinkClosed(f"expected the settings first, got {init[0]!r}")
    settings: DeliverySettings = pickle.loads(init[1])
    handler = _LinkLogHandler(link, trio.lowlevel.current_trio_token())
    replace_log_handlers(handler, settings.log_level)
    notify = settings.notify
    try:
        templates = load_templates(notify.templates_dir)
    except TemplateError as error:
        await link.send((REFUSED, 0, str(error)))
        return
    data_dir = Path(settings.data_dir)
    store = open_store_readonly(data_dir)
    deliveries = open_deliveries(data_dir)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client, \
            HttpClient(user_agent=USER_AGENT) as hooks:
        channels = build_channels(notify, client, hooks)
        deliverer = Deliverer(store, deliveries, channels, templates, settings.tenants,
                              settings.timezone, rate=RateLimit(notify.per_hour, notify.burst),
                              retry_ms=notify.retry_ms)
        loaded = deliverer.load_pending()
        if loaded:
            log.info("%d notice deliveries were pending; sending them now", loaded)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handler.run)
                await nursery.start(deliverer.run_settling)
                await nursery.start(deliverer.run_taking)
                await nursery.start(deliverer.run_dispatching)
                nursery.start_soon(_report, link, deliverer)
                await link.send((READY, "", 0))
                try:
                    await _follow_server(link, deliverer)
                except LinkClosed as error:
                    log.info("the server closed the delivery pipe (%s): stopping", error)
                nursery.cancel_scope.cancel()
        finally:
            for channel in channels.values():
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await channel.aclose()
            deliveries.close()
            store.close()


async def _follow_server(link: Link, deliverer: Deliverer) -> None:
    while True:
        message = await link.receive()
        if message[0] == WAKE:
            deliverer.wake()
        elif message[0] == REVIVE:
            revived = deliverer.revive(str(message[1]))
            log.info("%d dead deliveries of %s are tried again", revived,
                     message[1] or "every notice")
        else:
            log.warning("the server sent %r; ignored", message[0])


async def _report(link: Link, deliverer: Deliverer) -> None:
    while True:
        await link.send(statistics_row(deliverer))
        await trio.sleep(STATS_EVERY_S)


def main(argv: Sequence[str]) -> int:
    sock = helper_socket(argv, "server.notify_worker")
    if sock is None:
        return 2
    # Deliveries may wait; relay decisions may not. On a machine with fewer cores than busy
    # processes the scheduler gives this one the leftovers (measured in bench notify).
    os.nice(NICENESS)

    async def run() -> None:
        link = Link(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
        try:
            await serve(link)
        except* LinkClosed as closed:
            log.info("the server closed the delivery pipe: %s", closed.exceptions[0])

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

