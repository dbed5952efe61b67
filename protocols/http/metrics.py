"""``GET /metrics``: the park's live statistics in the Prometheus text format.

Theory of operation
-------------------
Nothing in the park counts for Prometheus: the dispatcher, journal, buses, router and hub keep
their own counters (``statistics()`` records), and :class:`StatisticsCollector` reads one
:class:`ParkStatistics` snapshot of them per scrape and turns it into metric families. A scrape
costs one pass over the counters and no work on the control path between scrapes; nothing is
registered globally (each app has its own ``CollectorRegistry``), so several parks in one test
process do not collide.

:class:`LoopProbe` measures what no counter shows: how late the trio loop wakes a task that
asked to sleep (a stalled loop delays every relay decision by that much). It sleeps
``period_s`` at a time and keeps the last and the worst lateness since the previous scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Final

import attrs
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

PREFIX: Final = "wattkeeper_"
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The classic text format every Prometheus version reads."""


@attrs.frozen
class GatewayFigures:
    gateway_id: str
    connected: bool
    polls: int
    failed_timeout: int
    failed_exception: int
    failed_garbage: int
    reconnects: int
    commands: int
    commands_pending: int
    units_offline: int
    last_cycle_ms: float
    p99_command_ms: float


@attrs.frozen
class QuotaFigures:
    """One quota group as its last count saw it (``used`` and ``limit`` in Wh or minor
    units, ``unit`` "kwh" or "money")."""

    group_id: str
    unit: str
    used: int
    limit: int
    blocked: bool


@attrs.frozen
class HubFigures:
    clients: int
    dropped_stalled: int
    restarts: int  # of its own process ([hub] isolation = "process"); 0 inline


@attrs.frozen
class OpcUaFigures:
    sessions: int
    events: int  # alarm condition events sent
    restarts: int  # of its process (it died)


@attrs.frozen
class ParkStatistics:
    """One reading of every counter the park keeps (``server.web`` fills it)."""

    meters: int
    meters_online: int
    meters_relay_open: int
    meters_faulted: int
    messages: int
    """Messages the meter actors handled (readings, commands, connectivity)."""
    readings_dropped: int
    actor_failures: int
    actor_restarts: int
    queue_depth: int
    longest_slice_ms: float
    relay_commands: int
    alarm_events: int
    alarms_raised: Mapping[str, int]
    """Alarm kind -> how many were raised (an overload alarm is a relay trip)."""
    commands: Mapping[tuple[str, str], int]
    """(command, result) -> how many operator and money commands (the audit's view)."""
    journal_available: bool
    journal_commits: int
    journal_entries: int
    journal_duplicates: int
    journal_pending: int
    journal_average_commit_ms: float
    journal_longest_commit_ms: float
    journal_writer_restarts: int
    loop_lateness_ms: float
    loop_worst_lateness_ms: float
    gateways: tuple[GatewayFigures, ...] = ()
    quotas: tuple[QuotaFigures, ...] = ()
    hub: HubFigures | None = None
    """None when no hub runs for this park."""
    opcua: OpcUaFigures | None = None
    """None when the park has no OPC UA server."""
    uptime_s: float = 0.0


class LoopProbe:
    """How late the trio loop wakes a sleeping task (module docstring)."""

    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s = period_s
        self.last_ms = 0.0
        self.worst_ms = 0.0
        self.samples = 0

    def take_worst_ms(self) -> float:
        """The worst lateness since the previous call (each scrape sees its own interval)."""
        worst, self.worst_ms = self.worst_ms, self.last_ms
        return worst

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        clock = time.perf_counter
        while True:
            asked = clock()
            await trio.sleep(self.period_s)
            late_ms = max(0.0, (clock() - asked - self.period_s) * 1000)
            self.last_ms = late_ms
            self.worst_ms = max(self.worst_ms, late_ms)
            self.samples += 1


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


class StatisticsCollector:
    """A prometheus-client collector over a :class:`ParkStatistics` source."""

    def __init__(self, statistics: Callable[[], ParkStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        s = self._statistics()
        yield _gauge("up", "1 while the server runs (0 is never scraped: absence is down)", 1)
        yield _gauge("uptime_seconds", "Seconds since the park started", s.uptime_s)
        meters = GaugeMetricFamily(PREFIX + "meters", "Configured meters by state",
                                   labels=["state"])
        meters.add_metric(["configured"], s.meters)
        meters.add_metric(["online"], s.meters_online)
        meters.add_metric(["relay_open"], s.meters_relay_open)
        meters.add_metric(["faulted"], s.meters_faulted)
        yield meters
        yield _counter("actor_messages", "Messages handled by meter actors (mostly readings)",
                       s.messages)
        yield _counter("readings_dropped", "Readings dropped because the run queue was full",
                       s.readings_dropped)
        yield _counter("actor_failures", "Exceptions raised by meter actors", s.actor_failures)
        yield _counter("actor_restarts", "Meter actors restarted by their supervisor",
                       s.actor_restarts)
        yield _gauge("dispatcher_queue_depth", "Messages waiting for the meter actors",
                     s.queue_depth)
        yield _gauge("dispatcher_longest_slice_seconds",
                     "Longest time the dispatcher held the loop in one slice",
                     s.longest_slice_ms / 1000)
        yield _gauge("loop_lateness_seconds", "How late the event loop last woke a sleeper",
                     s.loop_lateness_ms / 1000)
        yield _gauge("loop_stall_seconds",
                     "Worst event loop lateness since the previous scrape",
                     s.loop_worst_lateness_ms / 1000)
        yield _counter("relay_commands", "Relay switch commands sent to the field",
                       s.relay_commands)
        yield _counter("alarm_events", "Alarm events (raised, cleared, acknowledged)",
                       s.alarm_events)
        raised = CounterMetricFamily(PREFIX + "alarms_raised", "Alarms raised, by kind "
                                     "(overload: relay trips)", labels=["kind"])
        for kind, count in sorted(s.alarms_raised.items()):
            raised.add_metric([kind], count)
        yield raised
        commands = CounterMetricFamily(PREFIX + "commands", "Operator and money commands by "
                                       "result (topup: top-ups)", labels=["command", "result"])
        for (command, result), count in sorted(s.commands.items()):
            commands.add_metric([command, result], count)
        yield commands
        yield from self._journal(s)
        yield from self._gateways(s)
        yield from self._quotas(s)
        if s.hub is not None:
            yield _gauge("hub_clients", "Websocket clients connected to the hub", s.hub.clients)
            yield _counter("hub_dropped_clients", "Hub clients dropped as stalled",
                           s.hub.dropped_stalled)
            yield _counter("hub_restarts", "Restarts of the hub's own process (it died)",
                           s.hub.restarts)
        if s.opcua is not None:
            yield _gauge("opcua_sessions", "OPC UA client sessions", s.opcua.sessions)
            yield _counter("opcua_events", "OPC UA alarm condition events sent", s.opcua.events)
            yield _counter("opcua_restarts", "Restarts of the OPC UA server's process (it died)",
                           s.opcua.restarts)

    @staticmethod
    def _journal(s: ParkStatistics) -> Iterator[Metric]:
        yield _gauge("journal_available", "1 while the journal can write", s.journal_available)
        yield _counter("journal_commits", "Journal write transactions", s.journal_commits)
        yield _counter("journal_entries", "Journal entries committed", s.journal_entries)
        yield _counter("journal_duplicates", "Records answered by an earlier recording",
                       s.journal_duplicates)
        yield _gauge("journal_pending_records", "Records waiting for the writer",
                     s.journal_pending)
        yield _gauge("journal_commit_seconds_average", "Average journal commit time",
                     s.journal_average_commit_ms / 1000)
        yield _gauge("journal_commit_seconds_longest", "Longest journal commit time",
                     s.journal_longest_commit_ms / 1000)
        yield _counter("journal_writer_restarts", "Times the journal writer process restarted",
                       s.journal_writer_restarts)

    @staticmethod
    def _quotas(s: ParkStatistics) -> Iterator[Metric]:
        if not s.quotas:
            return
        share = GaugeMetricFamily(PREFIX + "quota_used_ratio",
                                  "A quota group's month used / its limit (1 = spent)",
                                  labels=["group", "unit"])
        blocked = GaugeMetricFamily(PREFIX + "quota_blocked",
                                    "1 while a quota group holds its meters open",
                                    labels=["group"])
        for q in s.quotas:
            share.add_metric([q.group_id, q.unit], q.used / q.limit if q.limit else 0.0)
            blocked.add_metric([q.group_id], q.blocked)
        yield from (share, blocked)

    @staticmethod
    def _gateways(s: ParkStatistics) -> Iterator[Metric]:
        connected = GaugeMetricFamily(PREFIX + "gateway_connected", "1 while connected",
                                      labels=["gateway"])
        polls = CounterMetricFamily(PREFIX + "polls", "Polls by gateway and result",
                                    labels=["gateway", "result"])
        reconnects = CounterMetricFamily(PREFIX + "gateway_reconnects", "Reconnects",
                                         labels=["gateway"])
        commands = CounterMetricFamily(PREFIX + "gateway_relay_commands",
                                       "Relay coil writes issued", labels=["gateway"])
        pending = GaugeMetricFamily(PREFIX + "gateway_relay_commands_pending",
                                    "Relay coil writes not yet acknowledged", labels=["gateway"])
        offline = GaugeMetricFamily(PREFIX + "gateway_units_offline", "Meters not answering",
                                    labels=["gateway"])
        cycle = GaugeMetricFamily(PREFIX + "gateway_cycle_seconds", "Last full poll cycle",
                                  labels=["gateway"])
        command_p99 = GaugeMetricFamily(PREFIX + "gateway_relay_command_seconds_p99",
                                        "Relay write latency, 99th percentile",
                                        labels=["gateway"])
        for g in s.gateways:
            name = [g.gateway_id]
            connected.add_metric(name, g.connected)
            polls.add_metric([g.gateway_id, "ok"], g.polls)
            polls.add_metric([g.gateway_id, "timeout"], g.failed_timeout)
            polls.add_metric([g.gateway_id, "exception"], g.failed_exception)
            polls.add_metric([g.gateway_id, "garbage"], g.failed_garbage)
            reconnects.add_metric(name, g.reconnects)
            commands.add_metric(name, g.commands)
            pending.add_metric(name, g.commands_pending)
            offline.add_metric(name, g.units_offline)
            cycle.add_metric(name, g.last_cycle_ms / 1000)
            command_p99.add_metric(name, g.p99_command_ms / 1000)
        yield from (connected, polls, reconnects, commands, pending, offline, cycle, command_p99)


def metrics_registry(statistics: Callable[[], ParkStatistics]) -> CollectorRegistry:
    """A registry of its own: the park's statistics and this process's CPU and memory."""
    registry = CollectorRegistry()
    registry.register(StatisticsCollector(statistics))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
