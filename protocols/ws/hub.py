"""The websocket hub: the park's live state and operator commands over trio-websocket.

Theory of operation
-------------------
``Hub.run`` serves websockets (``trio_websocket.serve_websocket``; ``wss://`` when given an
``ssl.SSLContext``). Each connection has two tasks: the *receiver* reads one frame at a time,
parses it (``protocols.ws.protocol``), follows the session's transition table and answers; the
*sender* drains the connection's :class:`~protocols.ws.outbox.Outbox` into frames. Commands
are handled in the receiver one after another (a client's commands are answered in the order
sent, and a client flooding commands only waits for itself: trio-websocket reads no further
frame until the previous one is taken).

The park reaches the hub through :meth:`Hub.on_tick`, called by the stream
(``server.stream``) on the trio thread once per tick with what changed. Meters that changed
within ``meter_rate_hz``'s interval are held (``protocols.ws.rate``: latest view wins, sent
when the interval is up). It encodes each other changed meter once
(:class:`~protocols.ws.protocol.MeterEncoder`) and shares the text with every client whose
subscription matches, found through indexes (meter id -> outboxes, plus
the outboxes that follow all meters), so a tick costs O(changes x interested clients) and
never looks at a client that does not care. It then wakes the senders that have something to
send. Nothing in ``on_tick`` waits: a client that reads slowly gets coalesced updates (the
outbox keeps the latest per meter), and one that stops reading is dropped (below). So neither
the control loop (which, with ``[hub] isolation = "inline"``, shares the trio thread and
only pays for the encoding and the index walk) nor the other clients (each has its own
sender) are delayed by it.

Dropping: a sender whose write blocks longer than ``stall_timeout_s``, or whose queued
answers and events exceed ``max_backlog_bytes``, closes its connection with code 1008
("stalled") and counts it in ``dropped_stalled``.

Frames: a text frame longer than ``max_frame_bytes`` (UTF-8) is answered ``bad_request`` and
the connection goes on; one longer than four times that (measured in characters, as
trio-websocket does) is not even buffered: trio-websocket closes the connection with 1009
(message too big). Binary frames are answered ``bad_request``.

Logins: the password check runs in a worker thread (a scrypt hash takes ~50 ms, too long for
the trio thread); before it, the hub waits the login throttle's delay for the client's host.
``welcome`` carries a session token; ``hello {token}`` resumes the session on a new
connection. More than ``max_clients`` connections are refused at the HTTP upgrade (503).
"""

from __future__ import annotations

import bisect
import functools
import logging
import ssl
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from protocols.stream.views import MeterView, ParkState, StreamTick
from protocols.ws.backend import Backend, Who
from protocols.ws.outbox import Outbox
from protocols.ws.protocol import (
    AckAlarm,
    AuditQuery,
    ClientFrame,
    Hello,
    MeterEncoder,
    NoticeList,
    NoticeRetry,
    OutputCount,
    ProtocolError,
    QuotaDecision,
    QuotaList,
    QuotaRequest,
    Relay,
    ReportQuery,
    ResetLockout,
    SessionState,
    Step,
    Subscribe,
    TopUp,
    command_error,
    encode_ack,
    encode_alarm,
    encode_audit,
    encode_audit_page,
    encode_error,
    encode_gateway,
    encode_notice_retry,
    encode_notices,
    encode_output,
    encode_park,
    encode_pong,
    encode_quota,
    encode_quotas,
    encode_report,
    encode_snapshot_done,
    encode_welcome,
    internal_error,
    next_step,
    parse_frame,
    refusal,
)
from protocols.ws.rate import MeterRate

log = logging.getLogger(__name__)

PARK_KEY: Final = "\x00park"
GATEWAY_KEY: Final = "\x00gateway:"
STALLED_CLOSE_CODE: Final = 1008
HARD_FRAME_FACTOR: Final = 4
PARK_EVERY_S: Final = 1.0
"""Each client gets the park totals at most this often (the stream computes them at 4 Hz)."""
PARK_BUCKETS: Final = 20
MAX_FAILED_HELLOS: Final = 10
"""Failed logins on one connection before it is closed (the throttle slows each one)."""
MAX_REPORT_CHARS: Final = 16 << 20
"""A bigger report is refused over the hub (HTTP and the command line have no limit)."""


@attrs.frozen
class HubSettings:
    host: str = "127.0.0.1"
    port: int = 8765
    max_frame_bytes: int = 65_536
    meter_rate_hz: float = 10.0
    stall_timeout_s: float = 5.0
    max_clients: int = 5_000
    ssl_context: ssl.SSLContext | None = None
    max_backlog_bytes: int = 8 << 20
    close_grace_s: float = 1.0


@attrs.frozen
class HubStatistics:
    """For /metrics. ``coalesced_updates``: meter/park/gateway updates that never went out
    because a newer one replaced them (or the client left first)."""

    clients: int
    authenticated: int
    meter_updates_offered: int  # changed meter x client following it, summed over ticks
    frames_sent: int
    bytes_sent: int
    messages_sent: int
    dropped_stalled: int
    coalesced_updates: int
    rejected_clients: int
    failed_logins: int
    errors_sent: int


class _Client:
    __slots__ = ("address", "cancel", "failed_hellos", "gateway", "host", "meters", "outbox",
                 "state", "topics", "waiting", "wakeup", "who", "ws")

    def __init__(self, ws: WebSocketConnection, address: str, host: str, outbox: Outbox) -> None:
        self.ws = ws
        self.address = address
        self.host = host
        self.outbox = outbox
        self.state = SessionState.AWAITING_HELLO
        self.who: Who | None = None
        self.topics: frozenset[str] = frozenset()
        # Sorted (membership by bisection), of the park's own id strings: a page of 100 meters
        # costs 0.9 KB here, where a frozenset of the ids as parsed cost 14 KB.
        self.meters: tuple[str, ...] | None = None  # None: every meter
        self.gateway: str | None = None
        self.wakeup = trio.Event()
        self.waiting = False
        self.failed_hellos = 0
        self.cancel = trio.CancelScope()

    def wake(self) -> None:
        if self.waiting:
            self.waiting = False
            self.wakeup.set()


def hub_url(host: str, port: int, *, tls: bool) -> str:
    return f"{'wss' if tls else 'ws'}://{f'[{host}]' if ':' in host else host}:{port}"


def _has(ordered: tuple[str, ...], item: str) -> bool:
    at = bisect.bisect_left(ordered, item)
    return at < len(ordered) and ordered[at] == item


def _address(remote: Endpoint | str) -> tuple[str, str]:
    """(``host:port``, host) of the peer."""
    if isinstance(remote, Endpoint):
        host = str(remote.address)
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{remote.port}", host
    return str(remote), str(remote)


class Hub:
    def __init__(
        self,
        settings: HubSettings,
        state: ParkState,
        backend: Backend,
        clock_ms: Callable[[], int],
    ) -> None:
        self.settings = settings
        self._state = state
        self._backend = backend
        self._clock_ms = clock_ms
        self._decimals = backend.decimals
        self._encoder = MeterEncoder(backend.decimals)
        self._fragments: dict[str, tuple[MeterView, str]] = {}
        self._rate = MeterRate(settings.meter_rate_hz)
        self._clients: set[_Client] = set()
        # Lists, not sets: ~10 followers a meter, and a set of 10 is five times the size.
        self._by_meter: dict[str, list[Outbox]] = {}
        self._all_meters: set[Outbox] = set()
        # Park followers in PARK_BUCKETS groups, each sent the latest totals once a second
        # at its own twentieth of it (see _pace).
        self._park: list[set[Outbox]] = [set() for _ in range(PARK_BUCKETS)]
        self._park_joined = 0
        self._park_fragment = ""
        self._park_version = 0
        self._park_sent = [0] * PARK_BUCKETS
        self._next_bucket = 0
        self._gateways: set[_Client] = set()
        self._alarms: set[_Client] = set()
        self._audit: set[_Client] = set()
        self._indexes: dict[str, dict[str, Any]] | None = None
        self._login_limiter = trio.CapacityLimiter(2)
        self.port = settings.port
        self._frames = 0
        self._bytes = 0
        self._messages = 0
        self._dropped = 0
        self._rejected = 0
        self._failed_logins = 0
        self._errors = 0
        self._offered_gone = 0  # offered - released of clients that left
        self._meter_offers = 0

    @property
    def url(self) -> str:
        return hub_url(self.settings.host, self.port, tls=self.settings.ssl_context is not None)

    def statistics(self) -> HubStatistics:
        offered = released = pending = 0
        for client in self._clients:
            outbox = client.outbox
            offered += outbox.offered
            released += outbox.released
            pending += len(outbox.updates)
        return HubStatistics(
            clients=len(self._clients),
            authenticated=sum(1 for c in self._clients if c.who is not None),
            meter_updates_offered=self._meter_offers,
            frames_sent=self._frames,
            bytes_sent=self._bytes,
            messages_sent=self._messages,
            dropped_stalled=self._dropped,
            coalesced_updates=self._offered_gone + offered - released - pending,
            rejected_clients=self._rejected,
            failed_logins=self._failed_logins,
            errors_sent=self._errors,
        )

    # -- the stream's side: never blocks ---------------------------------------------------

    def on_tick(self, tick: StreamTick) -> None:
        now = trio.current_time()
        self._fan_out(self._rate.admit(tick.meters, now))
        if tick.park is not None:  # sent by _pace, to a twentieth of the clients a tick
            self._park_fragment = encode_park(tick.park, self._decimals)
            self._park_version += 1
        for gateway in tick.gateways:
            fragment = encode_gateway(gateway)
            for client in self._gateways:
                if client.gateway is None or client.gateway == gateway.gateway_id:
                    client.outbox.update(GATEWAY_KEY + gateway.gateway_id, fragment)
        for alarm in tick.alarms:
            fragment = encode_alarm(alarm)
            for client in self._alarms:
                meters = client.meters
                if meters is None or not alarm.meter_id or _has(meters, alarm.meter_id):
                    client.outbox.event(fragment)
        for entry in tick.audit:
            fragment = encode_audit(entry)
            for client in self._audit:
                client.outbox.event(fragment)
        self._wake_senders()

    def _fan_out(self, views: list[MeterView]) -> None:
        """Each view encoded once, its text shared by every outbox that follows the meter."""
        by_meter = self._by_meter
        everyone = self._all_meters
        fragments = self._fragments
        encode = self._encoder.encode
        offers = 0
        for view in views:
            meter_id = view.meter_id
            targets = by_meter.get(meter_id)
            if not targets and not everyone:
                continue
            fragment = encode(view)
            fragments[meter_id] = (view, fragment)
            if targets:
                offers += len(targets)
                for outbox in targets:
                    outbox.updates[meter_id] = fragment
                    outbox.offered += 1
            offers += len(everyone)
            for outbox in everyone:
                outbox.updates[meter_id] = fragment
                outbox.offered += 1
        self._meter_offers += offers

    def _wake_senders(self) -> None:
        for client in self._clients:
            outbox = client.outbox
            if outbox.stalled or outbox.has_work():
                client.wake()

    async def _pace(self) -> None:
        """Every PARK_EVERY_S / PARK_BUCKETS: meters held back by the rate limit whose
        interval is up (even when no tick comes to carry them), and the latest park totals
        to the next bucket of park followers. Spread like this, a thousand clients do not
        all get their park frame in the same tick: sent at once, that burst held up the
        meter updates behind it by ~200 ms (bench hub's p99)."""
        rate = self._rate
        while True:
            await trio.sleep(PARK_EVERY_S / PARK_BUCKETS)
            woken = False
            if rate.held:
                self._fan_out(rate.release_due(trio.current_time()))
                woken = True
            bucket = self._next_bucket
            self._next_bucket = (bucket + 1) % PARK_BUCKETS
            if self._park_sent[bucket] != self._park_version and self._park[bucket]:
                self._park_sent[bucket] = self._park_version
                fragment = self._park_fragment
                for outbox in self._park[bucket]:
                    outbox.update(PARK_KEY, fragment)
                woken = True
            if woken:
                self._wake_senders()

    # -- serving ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started`` gets the hub's URL."""
        settings = self.settings
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                serve_websocket, self._handle, settings.host, settings.port,
                settings.ssl_context, handler_nursery=nursery,
                max_message_size=HARD_FRAME_FACTOR * settings.max_frame_bytes,
                message_queue_size=1))
            self.port = server.port
            nursery.start_soon(self._pace)
            log.info("websocket hub listening on %s", self.url)
            task_status.started(self.url)

    async def _handle(self, request: WebSocketRequest) -> None:
        """One connection; never raises (it would end the server's nursery)."""
        try:
            if len(self._clients) >= self.settings.max_clients:
                self._rejected += 1
                await request.reject(503, body=b"too many hub clients; retry later\n")
                return
            ws = await request.accept()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        address, host = _address(ws.remote)
        settings = self.settings
        client = _Client(ws, address, host, Outbox(max_backlog_bytes=settings.max_backlog_bytes))
        self._clients.add(client)
        try:
            with client.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_loop, client)
                    await self._receive_loop(client)
                    nursery.cancel_scope.cancel()
        except Exception:
            log.exception("hub connection %s failed", address)
        finally:
            self._forget(client)

    def _forget(self, client: _Client) -> None:
        self._clients.discard(client)
        self._unindex(client)
        outbox = client.outbox
        self._offered_gone += outbox.offered - outbox.released

    async def _receive_loop(self, client: _Client) -> None:
        while True:
            try:
                data = await client.ws.get_message()
            except ConnectionClosed:
                return
            try:
                frame = parse_frame(data, max_bytes=self.settings.max_frame_bytes,
                                    decimals=self._decimals)
            except ProtocolError as error:
                self._error(client, error.frame_id, error.code, str(error))
                continue
            await self._step(client, frame)
            if client.failed_hellos >= MAX_FAILED_HELLOS:
                await self._close(client, STALLED_CLOSE_CODE, "too many failed logins")
                return

    async def _send_loop(self, client: _Client) -> None:
        outbox = client.outbox
        ws = client.ws
        timeout = self.settings.stall_timeout_s
        while True:
            if outbox.stalled:
                await self._drop(client, f"more than {outbox.max_backlog_bytes} bytes queued")
                return
            messages = outbox.take()
            if not messages:
                client.wakeup = trio.Event()
                client.waiting = True
                await client.wakeup.wait()
                client.waiting = False
                continue
            self._messages += len(messages)
            for frame in outbox.frames(messages):
                with trio.move_on_after(timeout) as scope:
                    try:
                        await ws.send_message(frame)
                    except ConnectionClosed:
                        client.cancel.cancel()
                        return
                if scope.cancelled_caught:
                    await self._drop(client, f"a write blocked for more than {timeout:g} s")
                    return
                self._frames += 1
                self._bytes += len(frame)
            # Not kept while the sender sleeps: the last frame of a 100-meter snapshot is
            # 22 KB a client.
            del messages, frame

    async def _drop(self, client: _Client, why: str) -> None:
        self._dropped += 1
        log.warning("hub client %s (%s) dropped: stalled, %s", client.address,
                    client.who.user if client.who else "not logged in", why)
        await self._close(client, STALLED_CLOSE_CODE, "stalled: the client did not read")

    async def _close(self, client: _Client, code: int, reason: str) -> None:
        # A write cut off by the stall timeout may have left half a frame: the close frame
        # is a courtesy; past the grace time trio-websocket closes the TCP stream anyway.
        with trio.move_on_after(self.settings.close_grace_s):
            await client.ws.aclose(code, reason)
        client.cancel.cancel()

    def _answer(self, client: _Client, message: str) -> None:
        client.outbox.answer(message)
        client.wake()

    def _error(self, client: _Client, frame_id: object, code: str, message: str) -> None:
        self._errors += 1
        echo = frame_id if isinstance(frame_id, str | int) else None
        self._answer(client, encode_error(echo, code, message))

    # -- the session ------------------------------------------------------------------------

    async def _step(self, client: _Client, frame: ClientFrame) -> None:
        step = next_step(client.state, frame)
        if step is Step.LOGIN:
            assert isinstance(frame, Hello)
            await self._login(client, frame)
        elif step is Step.SUBSCRIBE:
            assert isinstance(frame, Subscribe)
            self._subscribe(client, frame)
        elif step is Step.COMMAND:
            await self._command(client, frame)
        elif step is Step.PONG:
            self._answer(client, encode_pong(frame.id))
        else:
            error = refusal(step, frame, client.who.user if client.who else "")
            self._error(client, error.frame_id, error.code, str(error))

    async def _login(self, client: _Client, hello: Hello) -> None:
        backend = self._backend
        delay = backend.login_delay_s(client.host, self._clock_ms())
        if delay > 0:
            await trio.sleep(delay)
        if hello.token:
            session = backend.resume_session(hello.token)
            found = None if session is None else (session.user, session.role)
            token, expires = hello.token, session.expires_ms if session else 0
            refused = "unknown or expired session token; log in with user and password"
        else:
            role = await trio.to_thread.run_sync(
                backend.authenticate, hello.user, hello.password,
                limiter=self._login_limiter)
            found = None if role is None else (hello.user, role)
            refused = "wrong user name or password"
        if found is None:
            self._failed_logins += 1
            client.failed_hellos += 1
            backend.login_failed(client.host, self._clock_ms())
            log.info("hub login refused from %s (%s)", client.address,
                     "token" if hello.token else f"user {hello.user!r}")
            self._error(client, hello.id, "unauthorized", refused)
            return
        backend.login_succeeded(client.host)
        user, role = found
        if not hello.token:
            token, expires = backend.issue_session(user, role)
        client.who = Who(user, role, client.address)
        client.state = SessionState.AUTHENTICATED
        self._answer(client, encode_welcome(user, role, token, expires))

    async def _command(self, client: _Client, frame: ClientFrame) -> None:
        who = client.who
        assert who is not None
        backend = self._backend
        try:
            if isinstance(frame, TopUp):
                ack = await backend.top_up(who, frame.meter, frame.amount, frame.id)
                self._answer(client, encode_ack(frame.id, ack, self._decimals))
            elif isinstance(frame, Relay):
                ack = await backend.set_relay(who, frame.meter, frame.action, frame.reason,
                                              frame.id)
                self._answer(client, encode_ack(frame.id, ack, self._decimals))
            elif isinstance(frame, ResetLockout):
                ack = await backend.reset_lockout(who, frame.meter, frame.id)
                self._answer(client, encode_ack(frame.id, ack, self._decimals))
            elif isinstance(frame, AckAlarm):
                ack = await backend.ack_alarm(who, frame.alarm, frame.id)
                self._answer(client, encode_ack(frame.id, ack, self._decimals, frame.alarm))
            elif isinstance(frame, ReportQuery):
                body, form = await backend.report(who, frame.kind, frame.query)
                if len(body) > MAX_REPORT_CHARS:
                    raise ProtocolError("bad_request", f"the report is {len(body):,} characters, "
                                        "more than the hub sends; ask GET /api/reports/"
                                        f"{frame.kind} or run `wattkeeper report`")
                self._answer(client, encode_report(frame.id, form, body))
            elif isinstance(frame, QuotaList):
                self._answer(client, encode_quotas(frame.id, await backend.quotas(who)))
            elif isinstance(frame, QuotaRequest):
                status, group = await backend.request_quota(who, frame.group, frame.amount,
                                                            frame.reason, frame.id)
                self._answer(client, encode_quota(frame.id, status, group))
            elif isinstance(frame, QuotaDecision):
                status, group = await backend.decide_quota(who, frame.group, frame.request,
                                                           frame.approve, frame.note, frame.id)
                self._answer(client, encode_quota(frame.id, status, group))
            elif isinstance(frame, OutputCount):
                status, line, date, count, unit = await backend.record_output(
                    who, frame.line, frame.date, frame.count, frame.id)
                self._answer(client, encode_output(frame.id, status, line, date, count, unit))
            elif isinstance(frame, NoticeList):
                self._answer(client, encode_notices(frame.id, await backend.notices(who)))
            elif isinstance(frame, NoticeRetry):
                notice, status = await backend.retry_notices(who, frame.notice, frame.id)
                self._answer(client, encode_notice_retry(frame.id, notice, status))
            elif isinstance(frame, AuditQuery):
                page = await backend.audit_page(who, frame.before, frame.limit)
                self._answer(client, encode_audit_page(frame.id, page.entries, page.next))
            else:  # the transition table sends nothing else here
                raise AssertionError(f"not a command: {frame!r}")
        except Exception as error:
            answer = command_error(error)
            if answer is None:
                log.exception("hub command %r from %s failed", frame, who.user)
                answer = internal_error(error)
            self._error(client, frame.id, *answer)

    # -- subscriptions ------------------------------------------------------------------------

    def _subscribe(self, client: _Client, sub: Subscribe) -> None:
        who = client.who
        assert who is not None
        if "audit" in sub.topics and not self._backend.may_follow_audit(who):
            self._error(client, sub.id, "forbidden",
                        f"a {who.role} may not follow the audit log; this needs the admin role")
            return
        current = self._state.current()
        matched: frozenset[str] | None = None
        ids = self._index_of("id")
        if sub.meters is not None:
            unknown = sorted(m for m in sub.meters if m not in current)
            if unknown:
                more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
                self._error(client, sub.id, "unknown_meter",
                            f"unknown meter {', '.join(map(repr, unknown[:3]))}{more}")
                return
            matched = sub.meters
        if sub.tenant is not None:
            some = self._index_of("tenant").get(sub.tenant, ())
            matched = frozenset(some) if matched is None else matched & frozenset(some)
        if sub.gateway is not None:
            some = self._index_of("gateway").get(sub.gateway, ())
            matched = frozenset(some) if matched is None else matched & frozenset(some)
        self._unindex(client)
        client.topics = sub.topics
        client.meters = None if matched is None else tuple(sorted(ids[m] for m in matched))
        client.gateway = sub.gateway
        self._reindex(client)
        client.outbox.start_snapshot(self._snapshot(client, sub.id), batch=sub.batch)
        client.wake()

    def _index_of(self, which: str) -> dict[str, Any]:
        """tenant/gateway -> meter ids, and each id -> the park's own string of it ("id"),
        built once: they come from the config."""
        if self._indexes is None:
            by_tenant: dict[str, list[str]] = {}
            by_gateway: dict[str, list[str]] = {}
            for view in self._state.current().values():
                by_tenant.setdefault(view.tenant, []).append(view.meter_id)
                by_gateway.setdefault(view.gateway, []).append(view.meter_id)
            ids = {meter_id: meter_id for meter_id in self._state.current()}
            self._indexes = {"tenant": by_tenant, "gateway": by_gateway, "id": ids}
        return self._indexes[which]

    def _reindex(self, client: _Client) -> None:
        topics = client.topics
        outbox = client.outbox
        if "meters" in topics:
            if client.meters is None:
                self._all_meters.add(outbox)
            else:
                for meter_id in client.meters:
                    self._by_meter.setdefault(meter_id, []).append(outbox)
        if "park" in topics:
            self._park[self._park_joined % PARK_BUCKETS].add(outbox)
            self._park_joined += 1
        if "gateways" in topics:
            self._gateways.add(client)
        if "alarms" in topics:
            self._alarms.add(client)
        if "audit" in topics:
            self._audit.add(client)

    def _unindex(self, client: _Client) -> None:
        outbox = client.outbox
        self._all_meters.discard(outbox)
        if "meters" in client.topics and client.meters is not None:
            for meter_id in client.meters:
                targets = self._by_meter.get(meter_id)
                if targets is not None and outbox in targets:
                    targets.remove(outbox)
                    if not targets:
                        del self._by_meter[meter_id]
        for bucket in self._park:
            bucket.discard(outbox)
        self._gateways.discard(client)
        self._alarms.discard(client)
        self._audit.discard(client)

    def _snapshot(self, client: _Client, sub_id: object) -> Iterator[str]:
        """The current state of what ``client`` follows, encoded lazily (module docstring)."""
        topics, meters, state = client.topics, client.meters, self._state
        if "meters" in topics:
            current = state.current()
            fragments = self._fragments
            encode = self._encoder.encode
            for meter_id in (list(current) if meters is None else meters):
                view = current.get(meter_id)
                if view is None:
                    continue
                cached = fragments.get(meter_id)
                if cached is not None and cached[0] is view:
                    yield cached[1]
                else:
                    fragment = encode(view)
                    fragments[meter_id] = (view, fragment)
                    yield fragment
        if "alarms" in topics:
            for alarm in state.active_alarms(None if meters is None else frozenset(meters)):
                yield encode_alarm(alarm)
        if "park" in topics:
            yield encode_park(state.park_view(), self._decimals)
        if "gateways" in topics:
            for gateway in state.gateway_views():
                if client.gateway is None or client.gateway == gateway.gateway_id:
                    yield encode_gateway(gateway)
        yield encode_snapshot_done(sub_id if isinstance(sub_id, str | int) else None)
