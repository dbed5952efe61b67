"""The HTTP side wired to a running park: console, REST API, metrics and health.

``run_web`` starts :func:`protocols.http.server.run_http` with an ``HttpBackend`` made of the
park's operations, users and login throttle (shared with the hub when the caller passes the
hub's, so guessing on one channel slows the other too), meter views, and a statistics reader
for ``/metrics``. Two counters the park does not keep are kept here, from listeners the park
already offers: alarms raised by kind (the router's alarm sinks; an overload alarm is a relay
trip) and commands by result (the operations' audit listeners: every channel's top-ups and
operator commands, accepted or refused).
"""

from __future__ import annotations

import functools
import importlib.metadata
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import cast

import trio

from actors.effects import AlarmEvent
from persistence.audit import AuditEntry
from persistence.history import iter_intervals
from policies.money import format_amount
from protocols.http.backend import Health, HttpBackend
from protocols.http.metrics import (
    GatewayFigures,
    HubFigures,
    LoopProbe,
    OpcUaFigures,
    ParkStatistics,
    QuotaFigures,
)
from protocols.http.server import HttpServer, run_http
from protocols.stream.views import MeterView
from protocols.ws.protocol import iso_ms
from server.app import Park
from server.auth import ROLE_RANK, Caller, LoginThrottle, Role, Users
from server.config import ListenAddress
from server.errors import UserError
from server.report_calls import CONTENT_TYPES, BadReportRequest, run_report
from server.reports.period import local_today, parse_period
from server.stream import meter_view
from server.tenant_page import TenantPage


class RegistryViews(Mapping[str, MeterView]):
    """Meter views read from the actors when asked (no copy of 10,000 views per request)."""

    def __init__(self, park: Park) -> None:
        self._park = park
        self._where = {meter.id: (meter.tenant, meter.gateway) for meter in park.config.meters}

    def __getitem__(self, meter_id: str) -> MeterView:
        tenant, gateway = self._where[meter_id]
        return meter_view(self._park.registry.get(meter_id), tenant, gateway,
                          self._park.clock.wall_ms())

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class ParkCounters:
    """Alarms raised by kind and commands by result, heard from the park's listeners."""

    def __init__(self) -> None:
        self.alarms_raised: Counter[str] = Counter()
        self.commands: Counter[tuple[str, str]] = Counter()

    def alarm(self, event: AlarmEvent) -> None:
        if event.state == "active":
            self.alarms_raised[event.kind] += 1

    def audited(self, entry: AuditEntry) -> None:
        self.commands[entry.command, entry.result] += 1


class ParkReader:
    """Health and statistics of a park, read on demand."""

    def __init__(self, park: Park, probe: LoopProbe,
                 hub: Callable[[], HubFigures] | None = None,
                 opcua: Callable[[], OpcUaFigures | None] | None = None) -> None:
        self._park = park
        self._probe = probe
        self._hub = hub
        self._opcua = opcua
        self._started = time.monotonic()
        self.counters = ParkCounters()
        park.router.alarm_sinks.append(self.counters.alarm)
        park.operations.audit_listeners.append(self.counters.audited)

    def health(self) -> Health:
        park = self._park
        return Health(park.journal.available, len(park.registry),
                      len(park.supervisor.faulted_meters), time.monotonic() - self._started)

    def statistics(self) -> ParkStatistics:
        park = self._park
        online = relay_open = 0
        for actor in park.registry:
            state = actor.state
            online += state.online and not actor.faulted
            relay_open += not state.relay.closed
        dispatcher = park.dispatcher.statistics()
        journal = park.journal.statistics()
        buses = park.field.buses if park.field is not None else ()
        gateways = []
        for bus in buses:
            s = bus.statistics()
            gateways.append(GatewayFigures(
                s.gateway_id, s.connected, s.polls, s.failed_timeout, s.failed_exception,
                s.failed_garbage, s.reconnects, s.commands, s.commands_pending,
                s.units_offline, s.last_cycle_ms, s.p99_command_ms))
        return ParkStatistics(
            meters=len(park.registry),
            meters_online=online,
            meters_relay_open=relay_open,
            meters_faulted=len(park.supervisor.faulted_meters),
            messages=dispatcher.messages,
            readings_dropped=park.registry.dropped_readings,
            actor_failures=dispatcher.failures,
            actor_restarts=park.supervisor.statistics().restarts,
            queue_depth=dispatcher.queue_depth,
            longest_slice_ms=dispatcher.longest_slice_ms,
            relay_commands=park.router.relay_commands,
            alarm_events=park.router.alarms,
            alarms_raised=dict(self.counters.alarms_raised),
            commands=dict(self.counters.commands),
            journal_available=journal.available,
            journal_commits=journal.commits,
            journal_entries=journal.entries,
            journal_duplicates=journal.duplicates,
            journal_pending=journal.pending_records,
            journal_average_commit_ms=journal.average_commit_ms,
            journal_longest_commit_ms=journal.longest_commit_ms,
            journal_writer_restarts=journal.writer_restarts,
            loop_lateness_ms=self._probe.last_ms,
            loop_worst_lateness_ms=self._probe.take_worst_ms(),
            gateways=tuple(gateways),
            quotas=tuple(QuotaFigures(g.group_id, g.policy.unit, g.booked,
                                      g.state.limit(g.policy), g.state.blocked)
                         for g in park.quotas.groups.values()),
            hub=self._hub() if self._hub is not None else None,
            opcua=self._opcua() if self._opcua is not None else None,
            uptime_s=time.monotonic() - self._started,
        )


def _http_caller(user: str, role: str, address: str) -> Caller:
    return Caller(user, _role(role), "http", address)


MAX_HISTORY_DAYS = 93


async def _meter_history(park: Park, meter_id: str,
                         query: Mapping[str, str]) -> dict[str, object]:
    """``GET /api/meters/{id}/history``: the meter's closed intervals over local days."""
    config = park.config
    decimals = config.server.decimals
    timezone = config.calendar.timezone
    try:
        period = parse_period(query.get("from"), query.get("to"), timezone,
                              local_today(timezone))
    except UserError as error:
        raise BadReportRequest(str(error)) from None
    if (period.end - period.first).days > MAX_HISTORY_DAYS:
        raise BadReportRequest(f"at most {MAX_HISTORY_DAYS} days a request (ask again for "
                               "the next ones)")
    rows = await trio.to_thread.run_sync(lambda: list(iter_intervals(
        park.store, meter_id, period.from_ms, period.to_ms)))
    return {
        "meter": meter_id, "from": period.labels[0], "to": period.labels[1],
        "interval_s": config.policies[meter_id].interval_ms // 1000,
        "intervals": [{
            "start": iso_ms(start), "kwh": wh / 1000, "cost": format_amount(minor, decimals),
            "band": band, "register_kwh": None if end is None else end[0] / 1000,
            "balance": None if end is None else format_amount(end[1], decimals),
        } for start, wh, minor, band, end in rows],
    }


async def _report(park: Park, caller: Caller, kind: str,
                  query: Mapping[str, str]) -> tuple[str, str]:
    """``GET /api/reports/{kind}``: the body and its media type."""
    body, form = await run_report(park, caller, kind, query)
    return body, CONTENT_TYPES[form]


def _version() -> str:
    try:
        return importlib.metadata.version("wattkeeper")
    except importlib.metadata.PackageNotFoundError:  # (run from a checkout not installed)
        return "0"


def _payment_caller(key_id: str, address: str) -> Caller:
    """A payment integration tops up as an operator would; the audit log names its key."""
    return Caller(f"payment:{key_id}", "operator", "payment", address)


def _role(role: str) -> Role:
    if role not in ROLE_RANK:
        raise ValueError(f"not a role: {role!r}")
    return cast(Role, role)


def public_hub_url(park: Park, bound: str | None = None) -> str:
    """Where browsers go for the hub: ``[http] hub_url`` when set (a proxy in front of the
    hub), else the hub's address as bound, else as configured."""
    return park.config.http.hub_url or bound or f"ws://{park.config.hub.listen}"


def http_backend(
    park: Park,
    reader: ParkReader,
    *,
    hub_url: str,
    users: Users | None = None,
    throttle: LoginThrottle | None = None,
    meters: Callable[[], Mapping[str, MeterView]] | None = None,
) -> HttpBackend:
    views = RegistryViews(park)
    current = meters if meters is not None else (lambda: views)
    tenant_page = None
    if park.tenant_links is not None:
        tenant_page = TenantPage(park.config, park.store, park.tenant_links, current,
                                 park.clock.wall_ms)
    return HttpBackend(
        operations=park.operations,
        users=users if users is not None else Users(park.config.users),
        throttle=throttle if throttle is not None else LoginThrottle(),
        caller=_http_caller,
        meters=current,
        health=reader.health,
        statistics=reader.statistics,
        clock_ms=park.clock.wall_ms,
        hub_url=hub_url,
        decimals=park.config.server.decimals,
        payment_secrets={key.id: key.secret.encode() for key in park.config.payment_keys},
        tenant_meters=park.config.tenant_meters(),
        payment_caller=_payment_caller,
        version=_version(),
        report=functools.partial(_report, park),
        history=functools.partial(_meter_history, park),
        tenant_page=tenant_page,
    )


async def run_web(
    park: Park,
    *,
    hub_url: str | None = None,
    users: Users | None = None,
    throttle: LoginThrottle | None = None,
    hub: Callable[[], HubFigures] | None = None,
    opcua: Callable[[], OpcUaFigures | None] | None = None,
    meters: Callable[[], Mapping[str, MeterView]] | None = None,
    listen: ListenAddress | None = None,
    task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the park's console and API on ``[http] listen`` until cancelled.

    ``hub_url`` is the hub's URL as it bound (``[http] hub_url`` overrides it for browsers).

    ``meters`` is the hub stream's ``current`` when the hub runs (its views are already
    built); without it views are read from the actors per request. ``listen`` replaces the
    config's address (tests: port 0 picks a free port)."""
    probe = LoopProbe()
    reader = ParkReader(park, probe, hub, opcua)
    backend = http_backend(park, reader, hub_url=public_hub_url(park, hub_url), users=users,
                           throttle=throttle, meters=meters)
    listen = listen or park.config.http.listen
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run)
        server = await nursery.start(functools.partial(run_http, backend, listen.host,
                                                       listen.port))
        task_status.started(server)
