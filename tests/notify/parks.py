"""Parks whose tenants have contacts, with local receivers for their notices."""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from server.config import ParkConfig
from tests.server.parks import park_toml

SECRET = "notify-secret-that-is-32-bytes-long!"
T0 = 1_795_000_000_000  # 2026-11-18 12:06:40 UTC, 20:06 in Shanghai


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def contacts_toml(smtp_port: int, webhook_url: str, *, quiet: str = "",
                  extra: str = "", slow_retries: bool = False) -> str:
    quiet_line = f'quiet_hours = "{quiet}"' if quiet else ""
    retry = '["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]' if slow_retries else \
        '["100ms", "200ms"]'

    return f"""
[calendar]
timezone = "Asia/Shanghai"

[notify]
retry = {retry}
per_hour = 0

[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "park@example.com"

[notify.webhook]
secret = "{SECRET}"

[tenants.t0]
name = "宏达机械"
language = "zh-CN"
emails = ["energy@hongda.example"]
webhook = "{webhook_url}"
{quiet_line}

[tenants.t1]
name = "ACME Tools Ltd"
language = "en"
emails = ["energy@acme.example", {{ address = "cfo@acme.example", notices = ["topup_receipt"] }}]
{extra}
"""


def notify_park(data_dir: Path, smtp_port: int, webhook_url: str, *, quiet: str = "",
                meters: int = 3, extra: str = "", slow_retries: bool = False) -> ParkConfig:
    return ParkConfig.from_toml_text(
        park_toml(data_dir, meters) + contacts_toml(smtp_port, webhook_url, quiet=quiet,
                                                    extra=extra, slow_retries=slow_retries),
        "notify-park.toml")


async def wait_for(condition: object, timeout_s: float = 20.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.02)
