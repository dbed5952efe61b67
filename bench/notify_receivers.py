"""``bench notify``'s receivers in a process of their own: ``python -m bench.notify_receivers
SECRET``.

The receivers stand for other machines (tenants' webhooks, the park's mail relay). On the
bench's two cores they run here, niced, so that they take what the server leaves rather than
the server's share. They are ``bench.notify_sinks``'s webhook receiver and SMTP server; every
arrival is one line on stdout, ``channel<TAB>notice id<TAB>arrival (wall s)<TAB>the notice's
ts (wall s, webhook only)<TAB>a digest of the body``, after a first line with the two ports.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any, Final

import trio

from bench.notify_sinks import Received, SmtpSink, WebhookSink, notice_ts_s

NICENESS: Final = 10
FLUSH_S: Final = 0.05


def _line(channel: str, received: Received) -> str:
    ts = notice_ts_s(received.body) if isinstance(received.body, dict) else 0.0
    digest = hashlib.blake2b(received.raw, digest_size=8).hexdigest() if channel == "webhook" \
        else ""
    return f"{channel}\t{received.notice_id}\t{received.at_s:.4f}\t{ts:.4f}\t{digest}\n"


async def main(secret: str) -> None:
    os.nice(NICENESS)
    smtp = SmtpSink()
    smtp.start()
    webhook = WebhookSink(secret)
    out = sys.stdout
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(webhook.run)
            out.write(f"{webhook.port}\t{smtp.port}\n")
            out.flush()
            sent_hooks = sent_mails = 0
            while True:
                await trio.sleep(FLUSH_S)
                hooks = webhook.received
                mails = smtp.messages()
                lines: list[str] = []
                lines += [_line("webhook", r) for r in hooks[sent_hooks:]]
                lines += [_line("email", r) for r in mails[sent_mails:]]
                sent_hooks, sent_mails = len(hooks), len(mails)
                if lines:
                    out.write("".join(lines))
                    out.flush()
    except BrokenPipeError:
        pass
    finally:
        smtp.stop()


def run(argv: list[str]) -> Any:
    return trio.run(main, argv[0])


if __name__ == "__main__":
    run(sys.argv[1:])
