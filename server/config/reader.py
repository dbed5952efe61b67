"""Reading a whole park document into a :class:`~server.config.records.ParkConfig`: every
section, the cross-references between them, the Modbus profiles, shared meter policies."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import tomllib
import zoneinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final, Literal, cast
from urllib.parse import urlsplit

import attrs

from policies.meter_policy import FriendlyPeriod, MeterPolicy
from policies.money import format_amount
from policies.tariff import interval_misalignment
from policies.tariff_records import MINUTES_PER_DAY, Band, Calendar, Season, Tariff, Tier
from protocols.modbus.profiles import (
    MAX_PROFILE_FILE_BYTES,
    Profile,
    ProfileError,
    builtin_profiles,
    load_profile_file,
)
from protocols.toml.limits import TomlNestingError, parse_toml
from protocols.toml.problems import Problems
from protocols.toml.values import (
    KeyPath,
    known,
    parse_duration_ms,
    show,
    suggest,
    type_name,
)
from server.auth import check_hash, is_hash
from server.config.records import (
    AUDIT_KEEP_DEFAULT,
    DAYS,
    GATEWAY_TRANSPORTS,
    HUB_ISOLATION,
    MAX_COMMAND_SLOTS,
    MAX_TIER_KWH,
    METER_KINDS,
    MIN_PAYMENT_SECRET_BYTES,
    MODBUS_ADDRESS_MAX,
    MODBUS_UNIT_MAX,
    MODBUS_UNIT_MIN,
    MS_PER_DAY,
    OPCUA_SECURITY,
    ROLES,
    WEEKDAYS,
    AuditSection,
    GatewaySection,
    HttpSection,
    HubSection,
    ListenAddress,
    MeterSection,
    OpcUaSection,
    ParkConfig,
    PaymentKey,
    ServerSection,
    User,
)
from server.config.shared_costs import SharedCostsReader
from server.config.tenants import TenantsReader
from server.config.toolkit import Table
from server.config.values import (
    MONTH_DAY,
    format_minute,
    id_problem,
    parse_listen,
)

_POLICY_DEFAULTS: Final = {
    field.name: field.default for field in attrs.fields(MeterPolicy) if field.init
}


class ParkReader:
    def __init__(self, document: dict[str, object], base_dir: Path) -> None:
        self.problems = Problems()
        self.root = Table(self.problems, (), document)
        self.base_dir = base_dir
        self.profiles: dict[str, Profile] = builtin_profiles()
        self.profile_files: tuple[Path, ...] = ()
        # Names of profile files that failed to load: meters naming them are not "unknown".
        self.broken_profiles: set[str] = set()
        self.unreadable_profile_file = False
        self.decimals = 2
        self.tariff_names: set[str] = set()
        self.interned: dict[tuple[object, ...], MeterPolicy] = {}
        self.misalignments: dict[tuple[str, int], str | None] = {}

    def read(self, source: str) -> ParkConfig | None:
        root = self.root
        server = self.read_server(root.table("server", required=True))
        self.decimals = server.decimals
        calendar = self.read_calendar(root.table("calendar"), root.at("server"), server.timezone)
        server = attrs.evolve(server, timezone=calendar.timezone)
        hub = self.read_hub(root.table("hub"))
        http = self.read_http(root.table("http"))
        opcua = self.read_opcua(root.table("opcua"), present=root.has("opcua"))
        users = self.read_users(root.tables("users"))
        payment_keys = self.read_payment_keys(root.tables("payment_keys"))
        audit = self.read_audit(root.table("audit"))
        self.read_profile_files(root)
        tariffs = self.read_tariffs(root.table("tariffs"), calendar)
        gateways = self.read_gateways(root.tables("gateways"))
        defaults = root.table("meter_defaults")
        meters, policies = self.read_meters(root.tables("meters"), defaults, tariffs, gateways)
        shared = SharedCostsReader(meters, self.decimals)
        people = TenantsReader(meters)
        notify = people.read_notify(root.table("notify"), self.base_dir)
        tenant_page = people.read_tenant_page(root.table("tenant_page"))
        tenants = people.read_tenants(root.table("tenants"), notify)
        quotas = shared.read_quotas(root.tables("quotas"))
        feeders = shared.read_feeders(root.tables("feeders"))
        pools = shared.read_pools(root.tables("pools"), feeders, tenants)
        lines = shared.read_lines(root.tables("lines"))
        root.finish()
        if self.problems.items:
            return None
        return ParkConfig(
            server=server,
            hub=hub,
            http=http,
            opcua=opcua,
            users=users,
            payment_keys=payment_keys,
            tariffs=tariffs,
            gateways=tuple(gateways.values()),
            meters=meters,
            calendar=calendar,
            policies=policies,
            source=source,
            profiles=self.profiles,
            profile_files=self.profile_files,
            audit=audit,
            tenants=tenants,
            quotas=quotas,
            feeders=feeders,
            pools=pools,
            lines=lines,
            notify=notify,
            tenant_page=tenant_page,
        )

    # -- sections --

    def read_server(self, t: Table) -> ServerSection:
        data_dir = t.string("data_dir")
        if "data_dir" not in t.failed and not data_dir.strip():
            t.fail("data_dir", "must not be empty")
        currency = t.string("currency")
        if "currency" not in t.failed and not re.fullmatch(r"[A-Z]{3}", currency):
            t.fail("currency", f'expected an ISO 4217 code like "CNY", got {show(currency)}')
        # Beyond 4 decimals a minor unit is finer than any currency's coin, and prices would
        # lose their sub-minor precision (policies.money).
        decimals = t.integer("decimals", 2, low=0, high=4)
        timezone = t.string("timezone", "")
        interval_ms = t.duration_ms("snapshot_interval", "10s", low_ms=100)
        t.finish()
        return ServerSection(
            data_dir=self.base_dir / data_dir,
            currency=currency,
            decimals=decimals,
            timezone=timezone,
            snapshot_interval_s=interval_ms / 1000,
        )

    def read_calendar(self, t: Table, server_path: KeyPath, server_timezone: str) -> Calendar:
        # The park's wall clock may be written in [server] or [calendar]; one clock, so two
        # different values are a mistake rather than a precedence rule to remember.
        timezone = t.string("timezone", "")
        if timezone and server_timezone and timezone != server_timezone:
            t.fail("timezone", f'differs from server.timezone "{server_timezone}"; set one')
        timezone = timezone or server_timezone or "UTC"
        if "timezone" not in t.failed:
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                path = t.at("timezone") if t.has("timezone") else (*server_path, "timezone")
                t.problems.add(path, f'unknown time zone {show(timezone)} (e.g. "Asia/Shanghai")')
        holidays: set[dt.date] = set()
        raw_holidays = t.raw("holidays", [])
        if not isinstance(raw_holidays, list):
            t.fail(
                "holidays",
                f'expected an array of dates like ["2026-10-01"], got {type_name(raw_holidays)}',
            )
            raw_holidays = []
        for index, item in enumerate(raw_holidays):
            day = self.parse_date(item)
            if day is None:
                t.problems.add(
                    (*t.at("holidays"), index), f'expected a date "YYYY-MM-DD", got {show(item)}'
                )
            else:
                holidays.add(day)
        weekend: set[int] = set()
        raw_weekend = t.raw("weekend", ["sat", "sun"])
        if not isinstance(raw_weekend, list):
            t.fail("weekend", f"expected an array of day names, got {type_name(raw_weekend)}")
            raw_weekend = []
        for index, item in enumerate(raw_weekend):
            day_number = WEEKDAYS.get(item.lower()) if isinstance(item, str) else None
            if day_number is None:
                hint = suggest(item, WEEKDAYS) if isinstance(item, str) else ""
                t.problems.add(
                    (*t.at("weekend"), index),
                    f"expected a day name mon..sun, got {show(item)}{hint}",
                )
            else:
                weekend.add(day_number)
        t.finish()
        return Calendar(timezone, frozenset(holidays), frozenset(weekend))

    @staticmethod
    def parse_date(value: object) -> dt.date | None:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", value):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                return None
        return None

    def read_listen(self, t: Table, default: ListenAddress) -> ListenAddress:
        address = default
        if t.has("listen"):
            try:
                address = parse_listen(t.raw("listen"))
            except ValueError as error:
                t.fail("listen", str(error))
        t.finish()
        return address

    def read_hub(self, t: Table) -> HubSection:
        default = HubSection()
        listen = default.listen
        if t.has("listen"):
            try:
                listen = parse_listen(t.raw("listen"))
            except ValueError as error:
                t.fail("listen", str(error))
        max_frame = t.integer("max_frame_bytes", default.max_frame_bytes, low=1024,
                              high=16 << 20)
        rate = t.number("meter_rate_hz", default.meter_rate_hz, low=0.0)
        if "meter_rate_hz" not in t.failed and not 0.1 <= rate <= 100:
            t.fail("meter_rate_hz", f"must be between 0.1 and 100 updates a second, got {rate:g}")
            rate = default.meter_rate_hz
        stall_ms = t.duration_ms("stall_timeout", "5s", low_ms=100)
        ttl_ms = t.duration_ms("session_ttl", "12h", low_ms=60_000)
        max_clients = t.integer("max_clients", default.max_clients, low=1, high=1_000_000)
        isolation = t.string("isolation", default.isolation, choices=HUB_ISOLATION)
        cert = t.string("tls_cert", "")
        key = t.string("tls_key", "")
        if bool(cert) != bool(key):
            t.problems.add(t.path, "tls_cert and tls_key go together: set both (wss://) or "
                                   "neither (ws://)")
        t.finish()
        return HubSection(
            listen=listen,
            max_frame_bytes=max_frame,
            meter_rate_hz=rate,
            stall_timeout_s=stall_ms / 1000,
            session_ttl_ms=ttl_ms,
            max_clients=max_clients,
            tls_cert=self.base_dir / cert if cert and key else None,
            tls_key=self.base_dir / key if cert and key else None,
            isolation=cast(Literal["process", "inline"], isolation or default.isolation),
        )

    def read_opcua(self, t: Table, *, present: bool) -> OpcUaSection:
        default = OpcUaSection()
        enabled = t.boolean("enabled", present)
        endpoint = t.string("endpoint", default.endpoint)
        if "endpoint" not in t.failed:
            problem = _endpoint_problem(endpoint)
            if problem:
                t.fail("endpoint", problem)
        security = t.string("security", default.security, choices=OPCUA_SECURITY)
        certificate = t.string("certificate", "")
        private_key = t.string("private_key", "")
        if bool(certificate) != bool(private_key):
            t.problems.add(t.path, "certificate and private_key go together: set both or neither")
        t.finish()
        return OpcUaSection(
            enabled=enabled,
            endpoint=endpoint,
            security=cast(Literal["none", "sign-encrypt"], security or default.security),
            certificate=self.base_dir / certificate if certificate else None,
            private_key=self.base_dir / private_key if private_key else None,
        )

    def read_http(self, t: Table) -> HttpSection:
        default = HttpSection()
        listen = default.listen
        if t.has("listen"):
            try:
                listen = parse_listen(t.raw("listen"))
            except ValueError as error:
                t.fail("listen", str(error))
        hub_url = t.string("hub_url", "")
        if hub_url and not re.fullmatch(r"wss?://[^\s/?#]+(/[^\s]*)?", hub_url):
            t.fail("hub_url", f'expected a websocket URL like "wss://park.example.com/hub", '
                              f"got {show(hub_url)}")
        t.finish()
        return HttpSection(listen=listen, hub_url=hub_url)

    def read_users(self, tables: list[Table]) -> tuple[User, ...]:
        users: list[User] = []
        first_at: dict[str, KeyPath] = {}
        for t in tables:
            name = t.name("name", "a user name")
            # Plain text (the contract's example) or a hash from `wattkeeper passwd`; a damaged
            # hash must fail here, with its line, not as "wrong password" at every login.
            password = t.string("password")
            if "password" not in t.failed and not password:
                t.fail("password", "must not be empty")
            elif "password" not in t.failed and is_hash(password):
                problem = check_hash(password)
                if problem is not None:
                    t.fail("password", problem)
            role = t.string("role", choices=ROLES)
            t.finish()
            t.first_of(first_at, name, "user", key="name")
            users.append(
                User(name, password, cast(Literal["viewer", "operator", "admin"], role or "viewer"))
            )
        return tuple(users)

    def read_payment_keys(self, tables: list[Table]) -> tuple[PaymentKey, ...]:
        keys: list[PaymentKey] = []
        first_at: dict[str, KeyPath] = {}
        for t in tables:
            key_id = t.name("id", "a payment key id")
            secret = t.string("secret")
            if "secret" not in t.failed and len(secret.encode()) < MIN_PAYMENT_SECRET_BYTES:
                t.fail("secret", f"must be at least {MIN_PAYMENT_SECRET_BYTES} bytes (it signs "
                                 f"money; this one has {len(secret.encode())}): generate one "
                                 "with `python3 -c 'import secrets; print(secrets.token_hex(32))'`")
            t.finish()
            t.first_of(first_at, key_id, "payment key")
            keys.append(PaymentKey(key_id, secret))
        return tuple(keys)

    def read_audit(self, t: Table) -> AuditSection:
        """``keep``: a duration; days (``"400d"``) besides the usual units, as retention is
        counted in days. At least an hour: the log is pruned hourly."""
        keep_ms = AuditSection().keep_ms
        if t.has("keep"):
            value = t.raw("keep")
            days = DAYS.fullmatch(value) if isinstance(value, str) else None
            if days is not None:
                keep_ms = int(days[1]) * MS_PER_DAY
                if keep_ms < 3_600_000:
                    t.fail("keep", f"must be at least 1h, got {show(value)}")
            else:
                try:
                    keep_ms = parse_duration_ms(value)
                except ValueError as error:
                    t.fail("keep", f'{error}; days are written like "{AUDIT_KEEP_DEFAULT}"')
                else:
                    if keep_ms < 3_600_000:
                        t.fail("keep", f"must be at least 1h, got {show(value)}")
        t.finish()
        return AuditSection(keep_ms)

    # -- meter profiles --

    def read_profile_files(self, root: Table) -> None:
        """``profile_files = ["profiles/acme-pm100.toml", ...]``: register maps beyond the
        shipped ones, each a file in the format of ``docs/profiles.md``. A file that cannot be
        used, or whose ``name`` is already taken, is a problem at its array element."""
        value = root.raw("profile_files", [])
        if not isinstance(value, list):
            root.fail(
                "profile_files",
                'expected an array of file paths like ["profiles/acme-pm100.toml"], '
                f"got {type_name(value)} {show(value)}",
            )
            return
        files: list[Path] = []
        first_at: dict[str, tuple[KeyPath, str]] = {}  # name -> where it was defined
        for index, item in enumerate(value):
            at = (*root.at("profile_files"), index)
            if not isinstance(item, str) or not item.strip():
                self.problems.add(at, f"expected a file path, got {type_name(item)} {show(item)}")
                continue
            path = self.base_dir / item
            files.append(path)
            try:
                profile = load_profile_file(path)
            except ProfileError as error:
                # The message names the file (as resolved) and the key inside it.
                self.problems.add(at, str(error))
                name = _profile_name_in(path)
                if name is None:
                    self.unreadable_profile_file = True
                else:
                    self.broken_profiles.add(name)
                continue
            name = profile.name
            if name in first_at:
                other_at, other = first_at[name]
                self.problems.add(
                    at,
                    f'"{item}": profile name "{name}" is already used by "{other}"',
                    related=other_at,
                )
            elif name in self.profiles:
                self.problems.add(
                    at,
                    f'"{item}": profile name "{name}" is a shipped profile\'s; '
                    "give the file's profile a name of its own",
                )
            else:
                first_at[name] = (at, item)
                self.profiles[name] = profile
        self.profile_files = tuple(files)

    # -- tariffs --

    def read_tariffs(self, t: Table, calendar: Calendar) -> dict[str, Tariff]:
        tariffs: dict[str, Tariff] = {}
        self.tariff_names = set(t.data)  # a broken tariff is still a known name for meters
        for name in t.data:
            problem = id_problem(name, "a tariff name")
            if problem is not None:
                t.problems.add(t.at(name), problem)
            tariff = self.read_tariff(name, t.table(name), calendar)
            if tariff is not None:
                tariffs[name] = tariff
        t.finish()
        return tariffs

    def read_tariff(self, name: str, t: Table, calendar: Calendar) -> Tariff | None:
        kind = t.string("kind", choices=("flat", "tou", "tiered"))
        # What a register unit is: written as `unit`, or said by the tiers' caps (up_to_m3).
        unit = t.string("unit", choices=tuple(TIER_CAP_KEYS)) if t.has("unit") else ""
        tariff: Tariff | None = None
        if kind == "flat":
            tariff = Tariff.flat(name, t.price("price", self.decimals), calendar)
        elif kind == "tou":
            bands = self.read_bands(t, "bands", required=True)
            # With bands, tier prices are surcharges on the band price (combined tariff).
            tiers, unit = self.read_tiers(t, required=False, unit=unit)
            tariff = Tariff(
                name=name,
                bands=bands,
                weekend_bands=self.read_bands(t, "weekend_bands"),
                holiday_bands=self.read_bands(t, "holiday_bands"),
                seasons=tuple(self.read_season(s) for s in t.tables("seasons")),
                tiers=tiers,
                calendar=calendar,
                unit=unit,
            )
        elif not kind:
            t.asked.update(t.data)  # without a kind, its other keys are neither right nor wrong
        elif kind == "tiered":
            tiers, unit = self.read_tiers(t, required=True, unit=unit)
            tariff = Tariff(
                name=name,
                # The band carries no price: the monthly blocks carry all of it.
                bands=(Band("tiered", 0, MINUTES_PER_DAY, 0),),
                tiers=tiers,
                calendar=calendar,
                unit=unit,
            )
        t.finish()
        if tariff is not None and unit and not tariff.unit:
            tariff = attrs.evolve(tariff, unit=unit)  # a flat price declared per kWh or m3
        return tariff

    def read_season(self, t: Table) -> Season:
        name = t.string("name")
        if "name" not in t.failed:
            t.check_id("name", name, "a season name")
        start = self.read_month_day(t, "from")
        end = self.read_month_day(t, "to")
        season = Season(
            name=name,
            start=start,
            end=end,
            bands=self.read_bands(t, "bands", required=True),
            weekend_bands=self.read_bands(t, "weekend_bands"),
            holiday_bands=self.read_bands(t, "holiday_bands"),
        )
        t.finish()
        return season

    @staticmethod
    def read_month_day(t: Table, key: str) -> tuple[int, int]:
        value = t.string(key)
        if key in t.failed:
            return (1, 1)
        match = MONTH_DAY.fullmatch(value)
        if match:
            month, day = int(match[1]), int(match[2])
            try:
                dt.date(2024, month, day)  # a leap year: 02-29 is a real day
            except ValueError:
                pass
            else:
                return (month, day)
        t.fail(key, f'expected a day of the year "MM-DD" like "06-01", got {show(value)}')
        return (1, 1)

    def read_bands(self, t: Table, key: str, *, required: bool = False) -> tuple[Band, ...]:
        """Bands covering the day exactly once. A band whose end is before its start wraps
        midnight (valley 23:00-07:00) and becomes two records with the same name."""
        pieces: list[tuple[Band, int]] = []  # (band, index of the element it came from)
        unreadable = False
        for index, b in enumerate(t.tables(key, required=required)):
            name = b.string("name")
            if "name" not in b.failed:
                b.check_id("name", name, "a band name")
            start = b.minute("start")
            end = b.minute("end", end=True)
            price = b.price("price", self.decimals)
            b.finish()
            if b.failed & {"start", "end"}:
                unreadable = True
                continue
            if start == end:
                b.problems.add(
                    b.path,
                    f"band {format_minute(start)}-{format_minute(end)} is "
                    "empty (a whole-day band is 00:00-24:00)",
                )
            elif start < end:
                pieces.append((Band(name, start, end, price), index))
            else:
                pieces.append((Band(name, start, MINUTES_PER_DAY, price), index))
                if end:
                    pieces.append((Band(name, 0, end, price), index))
        if key in t.failed or unreadable or not pieces:
            return ()  # with a band we could not read, any coverage verdict would be a guess
        pieces.sort(key=lambda piece: (piece[0].start_min, piece[0].end_min))
        covered = 0  # the day is covered up to this minute
        previous: Band | None = None
        previous_index = 0
        for band, index in pieces:
            if band.start_min > covered:
                t.problems.add(
                    t.at(key),
                    f"{format_minute(covered)}-"
                    f"{format_minute(band.start_min)} is not covered by any band",
                )
            elif band.start_min < covered and previous is not None:
                t.problems.add(
                    (*t.at(key), index),
                    f"{_span(band)} overlaps {_span(previous)} ({key}[{previous_index}])",
                )
            if band.end_min > covered:
                covered, previous, previous_index = band.end_min, band, index
        if covered < MINUTES_PER_DAY:
            t.problems.add(t.at(key), f"{format_minute(covered)}-24:00 is not covered by any band")
        return tuple(band for band, _ in pieces)

    def read_tiers(
        self, t: Table, *, required: bool, unit: str
    ) -> tuple[tuple[Tier, ...], str]:
        """Monthly blocks and the tariff's unit. Caps are in kWh (``up_to_kwh``) or, for
        water and gas, in m3 (``up_to_m3``); both become register units (Wh, litres). One
        tariff's caps share one unit: its ``unit`` if written, else its first cap's."""
        tiers: list[Tier] = []
        tables = t.tables("tiers", required=required)
        for position, tier in enumerate(tables):
            last = position == len(tables) - 1
            up_to: int | None = None
            caps = (("kWh", tier.has("up_to_kwh")), ("m3", tier.has("up_to_m3")))
            written = [cap_unit for cap_unit, present in caps if present]
            if written:
                cap_unit = written[-1]
                key = TIER_CAP_KEYS[cap_unit]
                up_to = self.read_cap(tier, key, cap_unit)
                if len(written) > 1:
                    tier.fail(key, "a tier has one cap: up_to_kwh or up_to_m3, not both")
                elif unit and cap_unit != unit:
                    why = (f'unit = "{unit}"' if t.has("unit") else
                           f"the first cap is {TIER_CAP_KEYS[unit]}")
                    tier.fail(key, f"this tariff counts {unit} ({why}): write "
                                   f"{TIER_CAP_KEYS[unit]}")
                elif last:
                    tier.fail(key, f"the last tier has no cap (leave out {key})")
                elif (
                    tiers
                    and tiers[-1].up_to_wh is not None
                    and up_to is not None
                    and up_to <= tiers[-1].up_to_wh
                ):
                    tier.fail(key, "caps must increase from tier to tier")
                unit = unit or cap_unit
            elif not last:
                key = TIER_CAP_KEYS[unit or "kWh"]
                tier.fail(key, f"every tier but the last needs {key}")
            tiers.append(Tier(up_to, tier.price("price", self.decimals)))
            tier.finish()
        return tuple(tiers), unit

    @staticmethod
    def read_cap(t: Table, key: str, unit: str) -> int | None:
        """A tier cap in kWh or m3 as whole register units (Wh, or litres)."""
        value = t.raw(key)
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        what = "energy in whole Wh" if unit == "kWh" else "volume in whole litres"
        try:
            if not isinstance(text, str):
                raise InvalidOperation
            wh = Decimal(text) * 1000
        except InvalidOperation:
            t.fail(key, f'expected {unit} as a decimal string like "1000", got {show(value)}')
            return None
        if not wh.is_finite() or wh <= 0 or wh != wh.to_integral_value():
            t.fail(key, f"expected a positive {what}, got {show(value)}")
            return None
        if wh > MAX_TIER_KWH * 1000:
            t.fail(key, f"a tier cap must be at most {MAX_TIER_KWH} {unit}, got {show(value)}")
            return None
        return int(wh)

    # -- gateways and meters --

    def read_gateways(self, tables: list[Table]) -> dict[str, GatewaySection]:
        gateways: dict[str, GatewaySection] = {}
        first_at: dict[str, KeyPath] = {}
        address_at: dict[tuple[str, int], KeyPath] = {}
        for t in tables:
            gateway_id = t.name("id", "a gateway id")
            host = t.string("host")
            if "host" not in t.failed and (not host or any(c.isspace() for c in host)):
                t.fail("host", f"expected a host name or address, got {show(host)}")
            port = t.integer("port", low=1, high=65535)
            poll_ms = t.duration_ms("poll_interval", "1s", low_ms=10)
            transport = t.string("transport", "tcp", choices=GATEWAY_TRANSPORTS) or "tcp"
            window = t.integer("window", 1, low=1, high=64)
            rtu = transport == "rtu-over-tcp"
            # RTU has no transaction id: one request on the wire at a time (protocols.modbus.rtu).
            # A window or command slots there would be silently ignored, so they are refused.
            if rtu and window > 1:
                t.fail("window", "must be 1 on an rtu-over-tcp gateway: RTU frames carry no "
                                 "transaction id, so one request is on the wire at a time")
            # A relay write must not wait a round trip behind a full window of polls; a
            # gateway that serializes (window 1) gains nothing from an extra slot.
            command_slots = t.integer(
                "command_slots", 1 if window > 1 and not rtu else 0, low=0, high=MAX_COMMAND_SLOTS
            )
            if rtu and command_slots:
                t.fail("command_slots", "must be 0 on an rtu-over-tcp gateway: one request is on "
                                        "the wire at a time, relay writes included")
            gateway = GatewaySection(
                id=gateway_id,
                host=host,
                port=port,
                poll_interval_ms=poll_ms,
                timeout_ms=t.duration_ms("timeout", "1s", low_ms=10),
                transport=cast(Literal["tcp", "rtu-over-tcp"], transport),
                window=window,
                retries=t.integer("retries", 1, low=0, high=10),
                offline_after=t.integer("offline_after", 3, low=1, high=1000),
                retry_backoff_ms=t.duration_ms("retry_backoff", "50ms", low_ms=1),
                reconnect_min_ms=t.duration_ms("reconnect_min", "100ms", low_ms=1),
                reconnect_max_ms=t.duration_ms("reconnect_max", "10s", low_ms=1),
                spread=t.boolean("spread", False),
                command_slots=command_slots,
            )
            if gateway.reconnect_min_ms > gateway.reconnect_max_ms:
                t.fail("reconnect_min", "must not exceed reconnect_max")
            t.finish()
            if not t.first_of(first_at, gateway_id, "gateway id"):
                continue
            if not t.failed & {"host", "port"}:
                if (host, port) in address_at:
                    t.problems.add(
                        t.at("port"),
                        f"{host}:{port} is already another gateway's address",
                        related=address_at[(host, port)],
                    )
                address_at[(host, port)] = t.at("port")
            gateways[gateway_id] = gateway
        return gateways

    def read_meters(
        self,
        tables: list[Table],
        defaults: Table,
        tariffs: dict[str, Tariff],
        gateways: dict[str, GatewaySection],
    ) -> tuple[tuple[MeterSection, ...], dict[str, MeterPolicy]]:
        # Keys are checked as each meter reads them; a bad default is reported once, at its
        # line (problems are deduplicated by path), so meter_defaults needs no finish() of its own.
        own_keys = ("id", "unit")
        for key in own_keys:
            if key in defaults.data:
                defaults.fail(key, f"every meter needs its own {key}; it cannot have a default")
        default_data = {k: v for k, v in defaults.data.items() if k not in own_keys}
        default_origin = {key: defaults.at(key) for key in default_data}
        meters: list[MeterSection] = []
        policies: dict[str, MeterPolicy] = {}
        first_at: dict[str, KeyPath] = {}
        unit_at: dict[tuple[str, int], tuple[KeyPath, str]] = {}
        for table in tables:
            merged = {**default_data, **table.data}
            origins = {k: p for k, p in default_origin.items() if k not in table.data}
            t = Table(self.problems, table.path, merged, origins)
            meter = self.read_meter(t, tariffs, gateways)
            if not t.first_of(first_at, meter.id, "meter id"):
                continue
            if not t.failed & {"gateway", "unit"}:
                slot = (meter.gateway, meter.unit)
                if slot in unit_at:
                    other_path, other_id = unit_at[slot]
                    t.problems.add(
                        t.at("unit"),
                        f'unit {meter.unit} on gateway "{meter.gateway}"'
                        f' is already meter "{other_id}"',
                        related=other_path,
                    )
                else:
                    unit_at[slot] = (t.at("unit"), meter.id)
            meters.append(meter)
            policies[meter.id] = meter.policy
        return tuple(meters), policies

    def misalignment(self, tariff: Tariff, interval_ms: int) -> str | None:
        """``interval_misalignment``, once per tariff and interval (100k meters share few)."""
        key = (tariff.name, interval_ms)
        if key not in self.misalignments:
            self.misalignments[key] = interval_misalignment(tariff, interval_ms)
        return self.misalignments[key]

    def intern_policy(self, tariff: Tariff, values: dict[str, object]) -> MeterPolicy:
        """The one MeterPolicy for these values: 100k meters share a handful of objects."""
        key = (tariff.name, *values.values())  # values come in _POLICY_KEY_FIELDS order
        policy = self.interned.get(key)
        if policy is None:
            # Fields by name; each value's type was checked when it was read.
            policy = MeterPolicy(tariff=tariff, decimals=self.decimals, **values)  # type: ignore[arg-type]
            self.interned[key] = policy
        return policy

    def read_meter(
        self, t: Table, tariffs: dict[str, Tariff], gateways: dict[str, GatewaySection]
    ) -> MeterSection:
        d = self.decimals
        meter_id = t.name("id", "a meter id")
        tenant = t.string("tenant")
        if "tenant" not in t.failed:
            t.check_id("tenant", tenant, "a tenant")
        gateway = t.string("gateway")
        if "gateway" not in t.failed and gateway not in gateways:
            t.fail(
                "gateway",
                f"unknown gateway {show(gateway)}{suggest(gateway, gateways)} {known(gateways)}",
            )
        unit = t.integer("unit", low=MODBUS_UNIT_MIN, high=MODBUS_UNIT_MAX)
        profile = t.string("profile")
        profile_record = self.profiles.get(profile)
        if (
            "profile" not in t.failed
            and profile_record is None
            and profile not in self.broken_profiles  # already reported at its file
            and not self.unreadable_profile_file  # it may be that file's name: fix it first
        ):
            # Named by id when the key is the meter's own; a bad meter_defaults value is one
            # mistake shared by every meter, reported once at its own line.
            own = "id" not in t.failed and "profile" not in t.origins
            whose = f'meter "{meter_id}": ' if own else ""
            t.fail(
                "profile",
                f"{whose}unknown profile {show(profile)}"
                f"{suggest(profile, self.profiles)} {known(self.profiles)}",
            )
        relay_coil = t.integer("relay_coil", 0, low=0, high=MODBUS_ADDRESS_MAX)
        tariff = t.string("tariff")
        if "tariff" not in t.failed and tariff not in self.tariff_names:
            t.fail(
                "tariff",
                f"unknown tariff {show(tariff)}{suggest(tariff, self.tariff_names)} "
                f"{known(self.tariff_names)}",
            )
        # Left out, the kind is the profile's; written, it must agree with it (a water tariff
        # on an electricity register map is a wiring mistake, not a preference).
        kind = t.string("kind", choices=METER_KINDS) if t.has("kind") else ""
        if kind and profile_record is not None and kind != profile_record.kind:
            own = "id" not in t.failed and not {"kind", "profile"} <= t.origins.keys()
            whose = f'meter "{meter_id}": ' if own else ""
            t.fail(
                "kind",
                f'{whose}kind "{kind}" does not match profile "{profile}", which is '
                f'"{profile_record.kind}"',
            )
        kind = kind or (profile_record.kind if profile_record is not None else "electricity")
        # A tariff that counts kWh (or m3) in its tiers or its `unit` prices one utility only.
        tariff_unit = tariffs[tariff].unit if tariff in tariffs else ""
        if tariff_unit and tariff_unit != UNIT_OF_KIND[kind] and "kind" not in t.failed:
            whose = f'meter "{meter_id}": ' if "id" not in t.failed else ""
            t.fail(
                "tariff",
                f'{whose}tariff "{tariff}" is priced per {tariff_unit}, but this {kind} meter '
                f"is charged per {UNIT_OF_KIND[kind]} (give it a tariff with "
                f'{TIER_CAP_KEYS[UNIT_OF_KIND[kind]]} tiers or unit = "{UNIT_OF_KIND[kind]}", '
                "or one with neither)",
            )
        opening_balance = t.amount("opening_balance", d, "0")

        alarm_levels = t.amounts("alarm_levels", d)
        if "alarm_levels" not in t.failed:
            for higher, lower in itertools.pairwise(alarm_levels):
                if lower >= higher:
                    t.fail(
                        "alarm_levels",
                        "levels must decrease (highest first): "
                        f"{format_amount(higher, d)} then {format_amount(lower, d)}",
                    )
                    break
            if alarm_levels and alarm_levels[-1] == 0:
                t.fail("alarm_levels", "a level of 0 is the zero-balance alarm, which is always on")
        friendly = tuple(self.read_friendly(f) for f in t.tables("friendly"))
        pd = _POLICY_DEFAULTS
        interval_ms = t.duration_ms("interval", f"{pd['interval_ms']}ms", low_ms=60_000)
        if interval_ms % 60_000 or 86_400_000 % interval_ms:
            t.fail("interval", "must be whole minutes that divide a day (e.g. 15m, 30m, 1h)")
        policy_values: dict[str, object] = {
            "overload_w": t.number("overload_w", pd["overload_w"]),
            "overload_delay_ms": t.duration_ms(
                "overload_delay", f"{pd['overload_delay_ms']}ms", low_ms=0
            ),
            "overload_reclose_ms": t.duration_ms(
                "overload_reclose", f"{pd['overload_reclose_ms']}ms", low_ms=0
            ),
            "alarm_levels": alarm_levels,
            "alarm_hysteresis": t.amount(
                "alarm_hysteresis", d, format_amount(cast(int, pd["alarm_hysteresis"]), d)
            ),
            "emergency_credit": t.amount("emergency_credit", d, "0"),
            "friendly": friendly,
            "debt_recovery_percent": t.integer(
                "debt_recovery_percent", pd["debt_recovery_percent"], low=0, high=100
            ),
            "lockout_trips": t.integer("lockout_trips", pd["lockout_trips"], low=1, high=1000),
            "lockout_window_ms": t.duration_ms(
                "lockout_window", f"{pd['lockout_window_ms']}ms", low_ms=1000
            ),
            "max_switches": t.integer("max_switches", pd["max_switches"], low=1, high=1000),
            "switch_window_ms": t.duration_ms(
                "switch_window", f"{pd['switch_window_ms']}ms", low_ms=1000
            ),
            "offline_opens_relay": t.boolean("offline_opens_relay", pd["offline_opens_relay"]),
            "interval_ms": interval_ms,
            # Plausibility: the profile's limits, or what this meter's wiring allows (a
            # breaker, a CT ratio): W for electricity, L/h of flow for water and gas.
            "max_power_w": self.max_power(t, profile_record),
            "max_register_wh": (profile_record.limits.max_register
                                if profile_record is not None else 10**15),
        }
        tariff_record = tariffs.get(tariff)
        if tariff_record is not None and "interval" not in t.failed:
            problem = self.misalignment(tariff_record, interval_ms)
            if problem is not None:
                t.fail("interval", f"a history interval must lie inside one tariff band, but "
                                   f"{problem}; choose an interval that divides it (e.g. 15m)")
        t.finish()
        assert tuple(policy_values) == _POLICY_KEY_FIELDS
        # A broken park is never built, so its meters skip the interning work.
        policy = (
            self.intern_policy(tariff_record, policy_values)
            if tariff_record is not None and not self.problems.items
            else _PLACEHOLDER_POLICY
        )
        return MeterSection(
            id=meter_id,
            tenant=tenant,
            gateway=gateway,
            unit=unit,
            profile=profile,
            relay_coil=relay_coil,
            tariff=tariff,
            opening_balance=opening_balance,
            policy=policy,
            kind=cast(Literal["electricity", "water", "gas"], kind),
        )

    @staticmethod
    def max_power(t: Table, profile: Profile | None) -> float:
        """``max_power_w``: the meter's own bound, at most what its profile says it can do."""
        rated = profile.limits.max_rate if profile is not None else 1e12
        if not t.has("max_power_w"):
            return rated
        value = t.number("max_power_w", rated)
        if "max_power_w" not in t.failed and not 0 < value <= rated:
            t.fail("max_power_w", f"must be > 0 and at most the profile's {rated:g} "
                                  "(its [limits]; a profile file can raise them)")
        return value

    @staticmethod
    def read_friendly(t: Table) -> FriendlyPeriod:
        """A window of local time (may wrap midnight) and/or whole friendly day types."""
        has_window = t.has("start") or t.has("end")
        start = t.minute("start", "00:00")
        end = t.minute("end", "00:00", end=True)
        on_holidays = t.boolean("on_holidays", False)
        on_weekends = t.boolean("on_weekends", False)
        t.finish()
        if has_window and start == end and not t.failed & {"start", "end"}:
            t.problems.add(t.path, "start and end are equal: the window is empty")
        elif not has_window and not (on_holidays or on_weekends):
            t.problems.add(
                t.path, "a friendly period needs start and end, on_holidays or on_weekends"
            )
        return FriendlyPeriod(start, end, on_holidays, on_weekends)


# The MeterPolicy fields a meter's config decides (tariff and decimals come from elsewhere), in
# the order of the interning key.
_POLICY_KEY_FIELDS: Final = tuple(
    name for name in _POLICY_DEFAULTS if name not in ("tariff", "decimals")
)
# A tariff's unit -> the key of its tier caps; a meter kind -> the unit its register counts
# (litres for water and gas: docs/profiles.md).
TIER_CAP_KEYS: Final = {"kWh": "up_to_kwh", "m3": "up_to_m3"}
UNIT_OF_KIND: Final = {"electricity": "kWh", "water": "m3", "gas": "m3"}
# Stands in for the shared policy while a meter is being read (replaced before it is kept).
_PLACEHOLDER_POLICY: Final = MeterPolicy(tariff=Tariff.flat("placeholder", 0))


def _span(band: Band) -> str:
    return f"{format_minute(band.start_min)}-{format_minute(band.end_min)}"


def _endpoint_problem(endpoint: str) -> str | None:
    if not endpoint.startswith("opc.tcp://"):
        return f'must start with "opc.tcp://", got "{endpoint}"'
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018  # raises ValueError on a port out of range
    except ValueError:
        return f'bad port in "{endpoint}" (1-65535)'
    if not parts.hostname:
        return f'no host in "{endpoint}" (like "opc.tcp://127.0.0.1:4840/wattkeeper/")'
    return None


def _profile_name_in(path: Path) -> str | None:
    """The ``name`` a profile file that failed to load declares, if it can be read at all."""
    try:
        if path.stat().st_size > MAX_PROFILE_FILE_BYTES:
            return None
        name = parse_toml(path.read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TomlNestingError):
        return None
    return name if isinstance(name, str) else None


