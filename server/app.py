"""Application wiring: the supervision tree of a running park.

Theory of operation
-------------------
``open_park`` starts the pieces in dependency order and stops them in reverse (OTP style):

1. the LMDB store (exclusive lock on the data directory) and the journal writer process;
2. recovery: every configured meter's state = its snapshot + newer journal entries (or its
   opening balance when it has neither); a meter whose record cannot be used starts faulted
   (quarantined, ``MeterSupervisor.quarantine``), the others start normally; then the control
   clock is anchored past every recovered time (``server.clock``), so it continues across the
   restart;
3. the runtime: effect router, dispatcher task, meter supervisor (one_for_one, restart
   intensity from config), park registry, ledger (money commands);
4. quota groups (``server.quotas``): replayed from the journal, tallied from the recovered
   meters, and their month clock; the feeders' live loss alarm (``server.loss_watch``); the
   tenants' link generations and the page links' secret (``server.tenant_links``);
5. periodic work: snapshots of changed meters, interval history flushes, audit retention
   (``[audit] keep``: at start, then hourly; ``persistence.audit_log``);
6. the field side: one bus task per Modbus gateway (``server.field``).

The ``Park`` it yields is what protocol adapters (websocket hub, HTTP, OPC UA, the demo) talk
to. Nothing a meter or the field does can end it: a meter's failure is its supervisor's (a
restart, then ``faulted``), a state that cannot be snapshotted restarts that meter, storage
that refuses work leaves snapshots and history for the next round. On exit every changed
meter is snapshotted once more, the journal is flushed, then the
store is closed, so a clean stop restarts without re-charging anything.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import trio

from actors.effects import (
    AlarmSink,
    EffectRouter,
)
from actors.meter import MeterActor
from actors.registry import ParkRegistry
from actors.runtime import Dispatcher
from actors.snapshots import run_snapshotter, snapshot_dirty
from actors.supervisor import MeterSupervisor, NotRestorable, RestartIntensity
from persistence.audit_log import LmdbAuditLog, run_audit_retention
from persistence.codec import encode_state
from persistence.damage import DamagedRecord
from persistence.journal import Journal, open_journal
from persistence.recovery import Apply, find_reference, recover_meter, recover_states
from persistence.store import Store, StoreError, open_store
from policies.meter import step
from policies.meter_policy import MeterPolicy
from policies.records import MeterState
from server.apportion import post_apportionment
from server.auth import Users
from server.clock import ParkClock
from server.collector import run_collector_hygiene
from server.config import ParkConfig
from server.field import Field, start_field
from server.ledger import Ledger
from server.loss_watch import LossWatch, run_loss_watch
from server.notice_desk import NoticeDesk
from server.notices import Notifier
from server.notify_process import NotifyProcess
from server.notify_process import wanted as delivery_wanted
from server.operations import Operations
from server.park_alarms import log_alarm, report_skipped, storage_alarm
from server.production import ProductionDesk
from server.quotas import QuotaDesk, month_clock, open_quota_groups, run_month_clock
from server.storage_feed import HistoryBuffer, offer_snapshots, run_history_flusher
from server.tenant_links import TenantLinkDesk, open_tenant_links

log = logging.getLogger(__name__)

def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SnapshotFailed:
    """Stands in for "the message" when a meter's state could not be snapshotted."""


class Park:
    """A running park: registry, ledger and runtime, for the protocol adapters."""

    def __init__(
        self,
        config: ParkConfig,
        store: Store,
        journal: Journal,
        registry: ParkRegistry,
        supervisor: MeterSupervisor,
        ledger: Ledger,
        clock: ParkClock,
        quotas: QuotaDesk,
        tenant_links: TenantLinkDesk | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.journal = journal
        self.registry = registry
        self.router = registry.router
        self.dispatcher = registry.dispatcher
        self.supervisor = supervisor
        self.ledger = ledger
        self.clock = clock
        self.quotas = quotas
        """Quota groups, their requests and decisions (``server.quotas``)."""
        self.audit = LmdbAuditLog(store, journal)
        """Every command, accepted or refused, in the data directory (``Operations`` writes)."""
        apportioner = functools.partial(post_apportionment, store, config, ledger, clock)
        production = ProductionDesk(config, journal, clock)
        self.tenant_links = tenant_links
        """Links to the tenants' self-service page (``server.tenant_links``)."""
        self.operations = Operations(registry, ledger, clock, self.audit, quotas, apportioner,
                                     production, decimals=config.server.decimals,
                                     tenant_links=tenant_links)
        self.users = Users(config.users)
        """The configured logins, shared by every adapter (hub, HTTP, OPC UA)."""
        self.clock_ms = clock.wall_ms
        self.tenants = {meter.id: meter.tenant for meter in config.meters}
        self.field: Field | None = None
        self.notifier: Notifier | None = None
        """Tenant notices (``server.notices``), when a tenant has a contact."""
        self.delivery: NotifyProcess | None = None
        """The delivery process (``server.notify_process``), when notices can be sent."""

    async def snapshot_now(self) -> int:
        """Snapshot every changed meter and wait until it is on disk (before a backup, say)."""
        written = await snapshot_dirty(self.router, encode_state, offer_snapshots(self.journal),
                                       on_encode_error=self.supervisor_restart)
        await self.journal.flush()
        return written

    def supervisor_restart(self, actor: MeterActor, error: Exception) -> None:
        self.supervisor.child_failed(actor, SnapshotFailed(), error)


def _replayers(policies: Mapping[str, MeterPolicy]) -> dict[str, Apply]:
    """Per-meter journal replay: each meter's entries go through its own policy."""

    def replayer(policy: MeterPolicy) -> Apply:
        return lambda state, message: step(state, message, policy)[0]

    return {meter_id: replayer(policy) for meter_id, policy in policies.items()}


def _highest_control_time(states: Mapping[str, MeterState]) -> int:
    """The latest control-clock time any recovered state remembers (the clock's anchor)."""
    highest = -1
    for state in states.values():
        times = (state.reading_mono_ms, state.protection.over_since_ms,
                 *state.protection.trip_ms, *state.relay.switch_ms)
        highest = max(highest, *times)
    return highest


def _restorer(store: Store, opening: dict[str, int]) -> Callable[[MeterActor], MeterState]:
    """Rebuild one actor's state from its persisted snapshot + its newer journal entries."""

    def restore(actor: MeterActor) -> MeterState:
        policy = actor.policy
        try:
            return recover_meter(store, actor.meter_id, opening[actor.meter_id],
                                 lambda state, message: step(state, message, policy)[0])
        except DamagedRecord as error:
            raise NotRestorable(str(error)) from error

    return restore


def _is_recorded(store: Store) -> Callable[[str], bool]:
    """Whether a reference is in the journal already (its recording may be damaged: then it
    is, all the same)."""

    def is_recorded(reference: str) -> bool:
        try:
            return find_reference(store, reference) is not None
        except DamagedRecord:
            return True

    return is_recorded


@asynccontextmanager
async def open_park(
    config: ParkConfig,
    *,
    clock_ms: Callable[[], int] = wall_clock_ms,
    clock: ParkClock | None = None,
    restart_intensity: RestartIntensity | None = None,
    snapshot_interval_s: float | None = None,
    with_field: bool = True,
    with_delivery: bool = True,
    alarm_sinks: Sequence[AlarmSink] = (),
) -> AsyncIterator[Park]:
    """Start a park (see the module docstring); ``with_field=False`` skips the Modbus buses,
    for tests and tools that feed readings themselves. ``clock`` (or just a wall clock,
    ``clock_ms``) is for tests and benches that step time. ``alarm_sinks`` hear every alarm
    from the start, including those of recovery (a quarantined meter, storage down).
    ``with_delivery=False`` raises tenant notices into the outbox but starts no process to
    send them (tests that read the outbox)."""
    clock = clock or ParkClock(clock_ms)
    interval = snapshot_interval_s or config.server.snapshot_interval_s
    with open_store(config.server.data_dir) as store:
        async with open_journal(store, days_zone=config.calendar.timezone) as journal, \
                trio.open_nursery() as nursery:
            opening = {meter.id: meter.opening_balance for meter in config.meters}
            started = time.perf_counter()
            policies = config.policies

            recovered = recover_states(store, opening, _replayers(policies))
            if not clock.anchored:
                clock.anchor(_highest_control_time(recovered.states))
            router = EffectRouter()
            router.alarm_sinks.extend(alarm_sinks)
            supervisor = MeterSupervisor(
                _restorer(store, opening), router, clock.mono_ms,
                restart_intensity or RestartIntensity(), label_ms=clock.wall_ms,
            )
            dispatcher = Dispatcher(supervisor.child_failed)
            registry = ParkRegistry(dispatcher, router)
            states = recovered.states
            for meter in config.meters:
                state = states.get(meter.id)
                if state is None:  # quarantined: a placeholder until its record is repaired
                    registry.add(meter.id, policies[meter.id],
                                 MeterState.opening(meter.opening_balance))
                    continue
                actor = registry.add(meter.id, policies[meter.id], state)
                router.mark_dirty(actor)  # a first snapshot pins the opening balance
            for meter_id, damage in recovered.quarantined.items():
                supervisor.quarantine(registry.get(meter_id), str(damage))
            report_skipped(router, recovered.skipped, clock.wall_ms())
            log.info("recovered %d meters in %.2f s (%d quarantined)", len(registry),
                     time.perf_counter() - started, len(recovered.quarantined))

            journal.set_on_availability(storage_alarm(router, registry, clock))
            if not journal.available:
                storage_alarm(router, registry, clock)(False, "the journal writer did not start")
            ledger = Ledger(registry, journal, clock.mono_ms, _is_recorded(store))
            journal.set_on_committed(ledger.on_committed)
            month_of = month_clock(config.calendar.timezone)
            groups = open_quota_groups(config, store, registry, router, clock, month_of)
            quotas = QuotaDesk(config, groups, journal, clock, month_of, _is_recorded(store))
            ledger.on_quota_entry = quotas.on_committed
            tenant_links = open_tenant_links(config, store, journal, clock)
            ledger.on_tenant_links_entry = tenant_links.on_committed
            history = HistoryBuffer()
            router.history_sink = history.add

            park = Park(config, store, journal, registry, supervisor, ledger, clock, quotas,
                        tenant_links)
            await nursery.start(dispatcher.run)
            await nursery.start(functools.partial(
                run_snapshotter, router, encode_state, offer_snapshots(journal), interval,
                on_encode_error=park.supervisor_restart))
            await nursery.start(run_history_flusher, history, journal, 1.0)
            await nursery.start(run_collector_hygiene)
            if groups:
                await nursery.start(run_month_clock, groups.values(), clock, month_of)
            watches = [LossWatch(feeder, registry, router, clock.wall_ms)
                       for feeder in config.feeders if feeder.loss_alarm_percent > 0]
            if watches:
                await nursery.start(run_loss_watch, watches)
            await nursery.start(run_audit_retention, journal, clock.wall_ms,
                                config.audit.keep_ms)
            notifier = Notifier(config, registry, clock)
            if notifier.reachable:
                park.notifier = await _start_notices(notifier, park, nursery, with_delivery)
            if with_field:
                park.field = await start_field(config, registry, router, nursery, clock)
            try:
                yield park
            finally:
                with trio.CancelScope(shield=True):
                    history.flush(journal)
                    if park.notifier is not None:
                        with contextlib.suppress(StoreError):
                            await park.notifier.flush(journal)
                    await snapshot_dirty(router, encode_state, offer_snapshots(journal),
                                         on_encode_error=park.supervisor_restart)
                    try:
                        await journal.flush()
                    except StoreError as error:  # storage down: what is queued is lost
                        log.error("the last snapshots were not written: %s", error)
                nursery.cancel_scope.cancel()


async def _start_notices(notifier: Notifier, park: Park, nursery: trio.Nursery,
                         with_delivery: bool) -> Notifier:
    """Hook tenant notices into the park (``server.notices``) and start their delivery."""
    notifier.start()
    park.router.alarm_sinks.append(notifier.on_alarm)
    park.router.relay_observers.append(notifier.on_relay)
    park.ledger.on_money_committed = notifier.on_money_committed
    caught_up = notifier.catch_up_receipts(park.store)
    if caught_up:
        log.info("top-up receipts: %d journal entries after the outbox's mark read", caught_up)
    await nursery.start(notifier.run_flusher, park.journal)
    await nursery.start(notifier.run_runout_scan)
    await nursery.start(notifier.run_statement_clock)
    if with_delivery and delivery_wanted(park.config):
        delivery = NotifyProcess(park.config)
        notifier.on_written = delivery.wake
        await nursery.start(delivery.run)
        park.delivery = delivery
    park.operations.notice_desk = NoticeDesk(park.config.server.data_dir, notifier,
                                             park.delivery)
    return notifier


def serve_forever(config: ParkConfig) -> None:
    """Run the park until Ctrl-C or SIGTERM (a service manager's stop); both close it in order:
    pollers stopped, history and a last snapshot written, the journal flushed."""

    from server.services import open_services  # (it imports this module)
    from server.stream import AlarmInbox

    async def main() -> None:
        inbox = AlarmInbox()
        with trio.open_signal_receiver(signal.SIGTERM) as stop_requests:
            async with open_park(config, alarm_sinks=(log_alarm, inbox)) as park, \
                    open_services(park, inbox=inbox) as services:
                log.info("websocket hub: %s; console: %s/%s", services.hub_url,
                         services.http_url,
                         f"; OPC UA: {services.opcua_url}" if services.opcua_url else "")
                async for _ in stop_requests:
                    log.info("SIGTERM: stopping")
                    return

    trio.run(main)
