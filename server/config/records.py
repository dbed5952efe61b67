"""The park configuration's records: what a valid park is, in the business model's units
(integers in minor units, Wh, ms), and the limits a value must keep to be storable."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import attrs

from policies.meter_policy import FriendlyPeriod, MeterPolicy
from policies.money import (
    CHARGE_UNITS_PER_MINOR,
    WH_PER_KWH,
)
from policies.notices import DEFAULT_RETRY_MS, QuietHours
from policies.quota import QuotaPolicy
from policies.tariff_records import Calendar, Tariff
from protocols.modbus.profiles import (
    Profile,
    builtin_profiles,
)
from protocols.toml.problems import DocumentError

ROLES: Final = ("viewer", "operator", "admin")
METER_KINDS: Final = ("electricity", "water", "gas")
OPCUA_SECURITY: Final = ("none", "sign-encrypt")
GATEWAY_TRANSPORTS: Final = ("tcp", "rtu-over-tcp")
"""Modbus TCP (MBAP), or RTU frames with their CRC over the TCP stream: what serial-to-Ethernet
converters in transparent mode and 4G DTUs speak (``protocols.modbus.rtu``)."""
MAX_COMMAND_SLOTS: Final = 16

# --- what storage can keep ---------------------------------------------------------------
# A value the config accepts must be one the journal and the snapshots can hold, or the
# mistake surfaces later as a refused top-up or a skipped snapshot instead of here, with its
# line (docs/configuration.md, "Limits").

MAX_ID_BYTES: Final = 128
"""Ids (meters, gateways, tenants, users, tariffs, bands, seasons), in UTF-8 bytes. LMDB keys
hold at most 511 bytes and a per-meter key adds 9 (``persistence.keys``); 128 is the ledger's
limit for references too, and leaves room for keys that combine an id with something else."""

MAX_PRICE_MINOR_PER_KWH: Final = 10**8
"""The highest price, in minor units per kWh (1,000,000.00 per kWh at two decimals). At that
price a whole 32-bit Wh register (4.3 GWh) costs 4.3 x 10^14 minor units, 1/20,000 of what a
64-bit integer holds, so no register delta a meter can show overflows a charge or a balance."""
MAX_PRICE_UNITS_PER_WH: Final = MAX_PRICE_MINOR_PER_KWH * CHARGE_UNITS_PER_MINOR // WH_PER_KWH

MAX_TIER_KWH: Final = 10**9
"""The highest tier cap (1 TWh in a month: no meter comes near it)."""

MAX_CONFIG_BYTES: Final = 64 << 20
"""The largest park config read (64 MiB: about 200,000 meters written out key by key; a
100,000-meter park is ~10 MB, which ``tomllib`` takes seconds to parse)."""

# NUL splits storage keys (persistence.keys); the other C0/C1 controls and the Unicode line
# separators would break the one-line log and error messages an id appears in.
CONTROL_CHARS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

MODBUS_UNIT_MIN, MODBUS_UNIT_MAX = 1, 247  # 0 is broadcast, 248..255 are reserved
MODBUS_ADDRESS_MAX = 65535
WEEKDAYS: Final = {
    name: number
    for number, names in enumerate(
        [
            ("mon", "monday"),
            ("tue", "tuesday"),
            ("wed", "wednesday"),
            ("thu", "thursday"),
            ("fri", "friday"),
            ("sat", "saturday"),
            ("sun", "sunday"),
        ]
    )
    for name in names
}



class ConfigError(DocumentError):
    """A config that cannot be used; ``str()`` is every problem, one per line, in file order
    (each a :class:`~protocols.toml.problems.Problem`)."""


# --- records -------------------------------------------------------------------------------


@attrs.frozen
class ListenAddress:
    """A TCP address to listen on; written ``"host:port"`` (``"[::1]:8080"`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@attrs.frozen
class ServerSection:
    data_dir: Path
    currency: str
    decimals: int = 2
    timezone: str = "UTC"
    snapshot_interval_s: float = 10.0


@attrs.frozen
class HubSection:
    """``[hub]``: the websocket hub (docs/protocol.md)."""

    listen: ListenAddress = ListenAddress("127.0.0.1", 8765)
    max_frame_bytes: int = 65_536
    meter_rate_hz: float = 10.0
    stall_timeout_s: float = 5.0
    session_ttl_ms: int = 12 * 3_600_000
    max_clients: int = 5_000
    tls_cert: Path | None = None
    tls_key: Path | None = None
    isolation: Literal["process", "inline"] = "process"
    """Where the hub runs: its own process fed by the stream (``server.hub_process``), or the
    server's own trio thread (``inline``: one process less, for small parks and tests)."""


HUB_ISOLATION: Final = ("process", "inline")


@attrs.frozen
class HttpSection:
    listen: ListenAddress = ListenAddress("127.0.0.1", 8080)
    hub_url: str = ""
    """Where browsers reach the hub when that is not ``[hub] listen`` (a reverse proxy or a
    TLS terminator in front of it); "" = ``ws://`` + ``[hub] listen``."""


@attrs.frozen
class OpcUaSection:
    """``[opcua]``: the OPC UA server runs when the config has this table (docs/opcua.md)."""

    enabled: bool = False
    endpoint: str = "opc.tcp://127.0.0.1:4840/wattkeeper/"
    security: Literal["none", "sign-encrypt"] = "sign-encrypt"
    certificate: Path | None = None
    private_key: Path | None = None


@attrs.frozen
class User:
    name: str
    # Kept out of repr so a logged config never shows it.
    password: str = attrs.field(repr=False)
    role: Literal["viewer", "operator", "admin"]


MIN_PAYMENT_SECRET_BYTES: Final = 32
"""A payment key's secret signs money: at least 256 bits (HMAC-SHA256's own size)."""


@attrs.frozen
class PaymentKey:
    """``[[payment_keys]]``: a payment integration (a WeChat Pay / Alipay / bank gateway
    relaying tenants' payments), which signs its notifications with ``secret``."""

    id: str
    secret: str = attrs.field(repr=False)


AUDIT_KEEP_DEFAULT: Final = "400d"
DAYS = re.compile(r"(\d+)d")
MS_PER_DAY: Final = 86_400_000


@attrs.frozen
class AuditSection:
    """``[audit]``: how long the audit log keeps an entry (``keep = "400d"``)."""

    keep_ms: int = 400 * MS_PER_DAY


@attrs.frozen
class GatewaySection:
    """A Modbus TCP gateway (or a Modbus TCP meter), or a serial converter speaking RTU over
    TCP (``transport``). Defaults match ``BusGateway``'s."""

    id: str
    host: str
    port: int
    poll_interval_ms: int = 1000
    timeout_ms: int = 1000
    transport: Literal["tcp", "rtu-over-tcp"] = "tcp"
    window: int = 1
    retries: int = 1
    offline_after: int = 3
    retry_backoff_ms: int = 50
    reconnect_min_ms: int = 100
    reconnect_max_ms: int = 10_000
    spread: bool = False
    command_slots: int = 0
    """In-flight slots only relay commands may use (``BusGateway.command_slots``); the config
    default is 1 when ``window`` > 1 (a pipelining gateway), else 0."""


@attrs.frozen
class MeterSection:
    """One meter: identity, wiring and money. The rule parameters live in ``policy``, which is
    shared with every meter configured the same way (so they are not repeated here)."""

    id: str
    tenant: str
    gateway: str
    unit: int
    profile: str
    relay_coil: int
    tariff: str
    opening_balance: int
    policy: MeterPolicy = attrs.field(repr=False)
    kind: Literal["electricity", "water", "gas"] = "electricity"

    # Read-through views of the policy parameters, for callers that think per meter.
    @property
    def overload_w(self) -> float:
        return self.policy.overload_w

    @property
    def overload_delay_ms(self) -> int:
        return self.policy.overload_delay_ms

    @property
    def alarm_levels(self) -> tuple[int, ...]:
        return self.policy.alarm_levels

    @property
    def emergency_credit(self) -> int:
        return self.policy.emergency_credit

    @property
    def friendly(self) -> tuple[FriendlyPeriod, ...]:
        return self.policy.friendly

    @property
    def debt_recovery_percent(self) -> int:
        return self.policy.debt_recovery_percent

    @property
    def offline_opens_relay(self) -> bool:
        return self.policy.offline_opens_relay


@attrs.frozen
class Contact:
    """One place a tenant is told things: an e-mail address, a phone (SMS), a webhook URL or a
    WeChat official-account openid, and which notice kinds it gets (``policies.notices``)."""

    channel: str  # "email" | "sms" | "webhook" | "wechat"
    address: str
    notices: frozenset[str]


@attrs.frozen
class TenantSection:
    """``[tenants.<id>]``: what the park knows of a tenant beyond its meters. A tenant that is
    not described still works (its name is its id, its floor area unknown, no contacts)."""

    id: str
    name: str
    area_m2: int = 0
    """Floor area in whole m2 (0: not given), the weight of ``basis = "area"`` pools."""
    language: str = "en"
    """``en`` or ``zh-CN``: its notices' templates and its phone page's first language."""
    contacts: tuple[Contact, ...] = ()
    quiet_hours: QuietHours | None = None
    """Reminders raised inside these local hours wait for their end; supply cuts do not."""
    sector: str = ""
    """What the tenant does (``machining``, ``cold-store``, ...): insights compare a tenant with
    the others of its sector."""


@attrs.frozen
class SmtpSection:
    """``[notify.smtp]``: the mail relay notices are sent through."""

    host: str
    port: int
    sender: str
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    starttls: bool = False
    timeout_s: float = 10.0


@attrs.frozen
class WebhookSection:
    """``[notify.webhook]``: the secret webhook notices are signed with (like payments)."""

    secret: str = attrs.field(repr=False)
    timeout_s: float = 10.0


SMS_PROVIDERS: Final = ("aliyun",)


@attrs.frozen
class SmsSection:
    """``[notify.sms]``: an SMS provider's account and its template ids per notice kind."""

    provider: str
    endpoint: str
    access_key_id: str
    access_key_secret: str = attrs.field(repr=False)
    sign_name: str
    templates: dict[str, str]
    region: str = "cn-hangzhou"
    timeout_s: float = 10.0


@attrs.frozen
class WechatSection:
    """``[notify.wechat]``: an official account that sends template messages."""

    endpoint: str
    app_id: str
    app_secret: str = attrs.field(repr=False)
    templates: dict[str, str]
    timeout_s: float = 10.0
    data_keys: dict[str, dict[str, str]] = attrs.field(factory=dict)
    """Per notice kind, the template's keys -> the notice's values (``thing1 = "meter"``)."""


@attrs.frozen
class NotifySection:
    """``[notify]``: how notices reach tenants (docs/tenants.md)."""

    language: str = "en"
    templates_dir: Path | None = None
    """Templates that override the shipped ones (``<language>/<kind>.<channel>``)."""
    per_hour: int = 20
    """Reminders per tenant and channel in an hour (0: no limit); urgent notices are exempt."""
    burst: int = 5
    runout_hours: float = 24.0
    """"Credit runs out in about N hours" is sent when the estimate falls below this."""
    retry_ms: tuple[int, ...] = DEFAULT_RETRY_MS
    smtp: SmtpSection | None = None
    webhook: WebhookSection | None = None
    sms: SmsSection | None = None
    wechat: WechatSection | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels that can deliver (those configured)."""
        present = {"email": self.smtp, "sms": self.sms, "webhook": self.webhook,
                   "wechat": self.wechat}
        return tuple(channel for channel, section in present.items() if section is not None)


@attrs.frozen
class TenantPageSection:
    """``[tenant_page]``: the tenants' self-service page (``/t/...``)."""

    secret: str = attrs.field(default="", repr=False)
    """Signs the page's links; empty: a secret kept in the data directory."""
    base_url: str = ""
    """How tenants reach the server (``https://park.example``), for links in notices."""
    topup_url: str = ""
    """The payment provider's page, with ``{tenant}``, ``{meter}``, ``{amount}``, ``{return}``;
    empty: the page has no Top up button."""
    link_days: int = 366


QUOTA_UNITS: Final = ("kwh", "money")


@attrs.frozen
class QuotaSection:
    """``[[quotas]]``: a production line's or workshop's monthly budget (``policies.quota``)."""

    id: str
    name: str
    meters: tuple[str, ...]
    policy: QuotaPolicy

    @property
    def owner(self) -> str:
        """Whose entries the journal keeps the group's requests and decisions under."""
        return quota_owner(self.id)


def quota_owner(group_id: str) -> str:
    return f"quota:{group_id}"


def line_owner(line_id: str) -> str:
    """Whose entries the journal keeps a production line's counts under."""
    return f"line:{line_id}"


@attrs.frozen
class LineSection:
    """``[[lines]]``: a production line (or workshop) whose output is counted, for the energy
    per unit of output (``server.production``, ``server.reports.output``)."""

    id: str
    name: str
    meters: tuple[str, ...]
    output_unit: str = "units"


@attrs.frozen
class FeederSection:
    """``[[feeders]]``: a main (transformer or feeder) meter and the meters directly under it.
    A sub-feeder is written as its own feeder whose ``main`` is one of these meters, so the
    feeders form a tree; loss = main - sum of the meters under it (``policies.apportionment``).
    """

    id: str
    main: str
    meters: tuple[str, ...]
    loss_alarm_percent: int = 0
    """Hundredths of a percent (``"6.5"`` -> 650); 0: no loss alarm."""
    loss_window_ms: int = 3_600_000
    """How much time the live loss alarm compares at once (``server.loss_watch``)."""


def subtree_meters(feeders: Sequence[FeederSection], feeder_id: str) -> list[str]:
    """The meters under a feeder and its sub-feeders that are no feeder's main meter."""
    by_id = {feeder.id: feeder for feeder in feeders}
    mains = {feeder.main: feeder for feeder in feeders}
    found: list[str] = []
    stack, seen = [by_id[feeder_id]], set()
    while stack:
        feeder = stack.pop()
        if feeder.id in seen:
            continue
        seen.add(feeder.id)
        for meter_id in feeder.meters:
            if meter_id in mains:
                stack.append(mains[meter_id])
            else:
                found.append(meter_id)
    return found


POOL_KINDS: Final = ("loss", "common")
POOL_BASES: Final = ("consumption", "area", "fixed")


@attrs.frozen
class PoolSection:
    """``[[pools]]``: a cost shared among tenants each period: a feeder's loss (``kind =
    "loss"``) or common-area meters' consumption (``"common"``), by ``basis``."""

    id: str
    name: str
    kind: Literal["loss", "common"]
    basis: Literal["consumption", "area", "fixed"]
    tenants: tuple[str, ...]
    """Who shares it, in config order (every one of them is some meter's tenant)."""
    feeder: str = ""
    """A loss pool's feeder."""
    meters: tuple[str, ...] = ()
    """A common pool's common-area meters."""
    shares: tuple[int, ...] = ()
    """``basis = "fixed"``: each tenant's weight (as ``tenants``), in hundredths."""


@attrs.frozen(eq=False)
class ParkConfig:
    """A whole, valid park. Build it with :meth:`from_toml_text` or :func:`load_config`."""

    server: ServerSection
    hub: HubSection
    http: HttpSection
    opcua: OpcUaSection
    users: tuple[User, ...]
    tariffs: dict[str, Tariff]
    gateways: tuple[GatewaySection, ...]
    meters: tuple[MeterSection, ...]
    calendar: Calendar
    policies: dict[str, MeterPolicy] = attrs.field(repr=False)
    """Meter id -> its policy; equal policies are one shared object."""
    source: str = "<config>"
    profiles: dict[str, Profile] = attrs.field(factory=builtin_profiles, repr=False)
    """Profile name -> register map: the shipped profiles plus those of ``profile_files``.
    Every meter's ``profile`` is a key here; the field and the simulator look profiles up here
    and nowhere else."""
    profile_files: tuple[Path, ...] = ()
    """The ``profile_files`` of the config, resolved against its directory."""
    audit: AuditSection = AuditSection()
    payment_keys: tuple[PaymentKey, ...] = ()
    tenants: dict[str, TenantSection] = attrs.field(factory=dict)
    """The described tenants (``[tenants.<id>]``)."""
    quotas: tuple[QuotaSection, ...] = ()
    feeders: tuple[FeederSection, ...] = ()
    pools: tuple[PoolSection, ...] = ()
    lines: tuple[LineSection, ...] = ()
    notify: NotifySection = NotifySection()
    tenant_page: TenantPageSection = TenantPageSection()

    @classmethod
    def from_toml_text(
        cls,
        text: str,
        source_name: str = "<config>",
        *,
        base_dir: Path | None = None,
    ) -> ParkConfig:
        """Parse and validate a park config; raise :class:`ConfigError` listing every problem.

        Relative paths (``server.data_dir``, OPC UA key files, ``profile_files``) are taken
        relative to ``base_dir`` (the config file's directory when loaded by
        :func:`load_config`; the current directory when None). Every meter's ``profile`` must
        name a shipped profile or one from ``profile_files``, and its ``kind`` must match it.
        """
        from server.config.loading import parse_config  # (it builds this class)

        return parse_config(text, source_name, base_dir=base_dir)

    def user(self, name: str) -> User | None:
        return next((user for user in self.users if user.name == name), None)

    def tenant_meters(self) -> dict[str, tuple[str, ...]]:
        """Tenant -> its meters, in config order (the first is the tenant's main meter)."""
        meters: dict[str, list[str]] = {}
        for meter in self.meters:
            meters.setdefault(meter.tenant, []).append(meter.id)
        return {tenant: tuple(ids) for tenant, ids in meters.items()}

    def tenant_name(self, tenant_id: str) -> str:
        described = self.tenants.get(tenant_id)
        return described.name if described is not None else tenant_id

    def tenant(self, tenant_id: str) -> TenantSection:
        """The tenant as described, or as an undescribed one is: its id for a name, the park's
        default language, no contacts."""
        described = self.tenants.get(tenant_id)
        if described is not None:
            return described
        return TenantSection(tenant_id, tenant_id, language=self.notify.language)

    def profile(self, name: str) -> Profile:
        """The register map of that name (every meter's ``profile`` is one)."""
        return self.profiles[name]

