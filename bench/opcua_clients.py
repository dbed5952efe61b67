"""The SCADA side of ``wattkeeper bench opcua``: one asyncua client (its own process) that
subscribes to ``PowerW`` of ``--watch`` meters with a 100 ms publishing interval and records,
for every data-change notification, how long ago its value was taken (now - SourceTimestamp,
the reading's wall label).

Commands on stdin, one per line: ``START`` (forget what was seen), ``REPORT`` (print one JSON
line: notifications, p50 and p99 in ms), ``END``. It prints ``READY`` once subscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from asyncua import Client, ua

from bench.results import percentile

PUBLISHING_INTERVAL_MS = 100


class Latencies:
    def __init__(self) -> None:
        self.ms: list[float] = []

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        stamp = data.monitored_item.Value.SourceTimestamp
        if stamp is not None:
            self.ms.append(time.time() * 1000 - stamp.timestamp() * 1000)


async def run(args: argparse.Namespace) -> None:
    client = Client(args.url, timeout=30)
    client.set_user(args.user)
    client.set_password(args.password)
    await client.connect()
    ns = await client.get_namespace_index("urn:wattkeeper")
    latencies = Latencies()
    subscription = await client.create_subscription(
        ua.CreateSubscriptionParameters(RequestedPublishingInterval=PUBLISHING_INTERVAL_MS,
                                        RequestedMaxKeepAliveCount=100,
                                        RequestedLifetimeCount=1000,
                                        MaxNotificationsPerPublish=0, Priority=0),
        latencies)
    nodes = [client.get_node(ua.NodeId(f"meter.PowerW:{meter_id}", ns))
             for meter_id in args.meter_ids.split(",")]
    for start in range(0, len(nodes), 500):
        await subscription.subscribe_data_change(nodes[start:start + 500], queuesize=1)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "START":
            latencies.ms.clear()
        elif line == "REPORT":
            print(json.dumps({"notifications": len(latencies.ms),
                              "p50_ms": round(percentile(latencies.ms, 0.5), 1),
                              "p99_ms": round(percentile(latencies.ms, 0.99), 1)}), flush=True)
        elif line in ("END", ""):
            break
    await client.disconnect()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--meter-ids", required=True, help="comma-separated")
    parser.add_argument("--user", default="bench")
    parser.add_argument("--password", default="bench-secret")
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
