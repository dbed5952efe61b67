"""The park configuration: a TOML file turned into frozen, validated records.

Theory of operation
-------------------
Loading is three passes over one file, and nothing is started unless all three succeed:

1. **Syntax.** ``tomllib`` parses the text into plain dicts. Its errors already carry a line and
   column; they are reworded into the same ``file:line: ...`` shape as everything else. A file
   above ``MAX_CONFIG_BYTES`` is refused unread, and one nested deeper than
   ``protocols.toml_limits.MAX_NESTING`` is refused with its line before ``tomllib``'s
   recursion could end in a traceback.
2. **Validation.** Each table is read through a :class:`_Table` view that knows its key path
   (``meters[3]``) and remembers which keys were asked for. Every accessor converts and checks
   one value (durations, money, times, addresses, Modbus ranges) and, on a bad value, records a
   problem and returns a harmless placeholder instead of raising, so that *every* problem in the
   file is found in one run. A key nobody asked for is a typo and gets a "did you mean"
   suggestion. Values must also be ones storage can keep (ids within ``MAX_ID_BYTES`` and
   without control characters, money within ``MAX_AMOUNT_MINOR``, prices within
   ``MAX_PRICE_MINOR_PER_KWH``): refused here with their line, they cannot surface later as a
   refused top-up or a skipped snapshot. Cross-references (a meter's tariff and gateway,
   duplicate ids, duplicate Modbus addresses) are checked once all sections are read. The
   Modbus profiles are resolved here too: the shipped ones plus the files named by
   ``profile_files`` (loaded with ``protocols.modbus.profiles.load_profile_file``), so a
   meter's ``profile`` and ``kind`` are checked against real register maps and the config hands
   the field and the simulator the very ``Profile`` objects it checked against.
3. **Locating.** Only if there were problems: ``tomllib`` reports no positions, so a small
   scanner (:func:`_locate_keys`) walks the (already valid) source text and maps every key path
   to the line where it is written: tables, arrays of tables counted by index, inline tables in
   arrays, dotted keys. A path it cannot find falls back to its nearest enclosing table, and the
   scanner never raises: a problem is reported without a line rather than not at all. Doing
   this lazily keeps a 100k-meter file's happy path free of the cost.

The records are the business model (integers in minor units, Wh, ms; ``policies`` records for
tariffs and calendars); the TOML spelling ("2s", "100.00", "08:00") exists only in this module.
Meters with identical policy parameters share one :class:`~policies.meter_policy.MeterPolicy`
(interned by value), so a park of 100k meters holds a handful of policy objects, not 100k.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import difflib
import functools
import itertools
import re
import tomllib
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final, Literal, cast
from urllib.parse import urlsplit

import attrs

from policies.meter_policy import FriendlyPeriod, MeterPolicy
from policies.money import (
    CHARGE_UNITS_PER_MINOR,
    MAX_AMOUNT_MINOR,
    WH_PER_KWH,
    MoneyError,
    format_amount,
    format_price,
    parse_amount,
    parse_price,
)
from policies.tariff import interval_misalignment
from policies.tariff_records import MINUTES_PER_DAY, Band, Calendar, Season, Tariff, Tier
from protocols.modbus.profiles import (
    MAX_PROFILE_FILE_BYTES,
    Profile,
    ProfileError,
    builtin_profiles,
    load_profile_file,
)
from protocols.toml_limits import TomlNestingError, parse_toml
from server.auth import check_hash, is_hash

KeyPath = tuple[str | int, ...]
"""A position in the TOML document: ``("meters", 3, "tariff")`` is ``meters[3].tariff``."""

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
_MAX_PRICE_UNITS_PER_WH: Final = MAX_PRICE_MINOR_PER_KWH * CHARGE_UNITS_PER_MINOR // WH_PER_KWH

MAX_TIER_KWH: Final = 10**9
"""The highest tier cap (1 TWh in a month: no meter comes near it)."""

MAX_CONFIG_BYTES: Final = 64 << 20
"""The largest park config read (64 MiB: about 200,000 meters written out key by key; a
100,000-meter park is ~10 MB, which ``tomllib`` takes seconds to parse)."""

# NUL splits storage keys (persistence.keys); the other C0/C1 controls and the Unicode line
# separators would break the one-line log and error messages an id appears in.
_CONTROL_CHARS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

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

# --- errors --------------------------------------------------------------------------------


@attrs.frozen
class Problem:
    """One thing wrong with a config file, located for the user."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config that cannot be used; ``str()`` is every problem, one per line, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


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


AUDIT_KEEP_DEFAULT: Final = "400d"
_DAYS = re.compile(r"(\d+)d")
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
        if text.startswith("\ufeff"):  # a BOM from Windows editors is not a TOML error
            text = text[1:]
        # Characters <= bytes: encode only a text that might be over the limit.
        if len(text) > MAX_CONFIG_BYTES // 4 and len(text.encode()) > MAX_CONFIG_BYTES:
            raise ConfigError([_too_big_problem(source_name, len(text.encode()))])
        try:
            document = parse_toml(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError([_syntax_problem(error, source_name)]) from None
        except TomlNestingError as error:
            raise ConfigError([Problem(source_name, error.line, "", str(error))]) from None
        reader = _ParkReader(document, base_dir or Path())
        config = reader.read(source_name)
        if reader.problems.items:
            raise ConfigError(reader.problems.located(text, source_name))
        assert config is not None  # read() returns None only when it recorded problems
        return config

    def user(self, name: str) -> User | None:
        return next((user for user in self.users if user.name == name), None)

    def profile(self, name: str) -> Profile:
        """The register map of that name (every meter's ``profile`` is one)."""
        return self.profiles[name]


def load_config(path: Path | str) -> ParkConfig:
    """Read a park config file; every problem (including an unreadable file) is a ConfigError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:  # refused before reading it into memory
            raise ConfigError([_too_big_problem(str(path), size)])
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {reason}")]) from None
    except UnicodeDecodeError as error:
        message = f"not UTF-8 text (byte {error.start})"
        raise ConfigError([Problem(str(path), None, "", message)]) from None
    return ParkConfig.from_toml_text(text, str(path), base_dir=path.absolute().parent)


# --- value syntax --------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_MS_PER_UNIT: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_TIME = re.compile(r"(\d\d):(\d\d)")
_MONTH_DAY = re.compile(r"(\d\d)-(\d\d)")


def parse_duration_ms(value: object) -> int:
    """``"500ms"``, ``"2s"``, ``"1.5s"``, ``"5m"``, ``"1h"`` -> whole milliseconds."""
    if not isinstance(value, str):
        raise ValueError(
            f'expected a duration with a unit like "2s" or "500ms", got {_show(value)}'
        )
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ValueError(
            f'expected a duration like "500ms", "2s", "5m" or "1h" (units: ms, s, m, h), '
            f"got {_show(value)}"
        )
    ms = Decimal(match[1]) * _MS_PER_UNIT[match[2]]
    if ms != ms.to_integral_value():
        raise ValueError(f"{_show(value)} is not a whole number of milliseconds")
    return int(ms)


# A park file repeats the same few values thousands of times ("100.00", "2s"); parsing each
# once keeps a 100k-meter load dominated by TOML parsing, not by Decimal.
_cached_duration_ms = functools.lru_cache(maxsize=1024)(parse_duration_ms)


@functools.lru_cache(maxsize=1024)
def _cached_amount(value: str, decimals: int) -> int:
    return parse_amount(value, decimals)


def format_minute(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_minute(value: object, *, allow_end_of_day: bool = False) -> int:
    """``"HH:MM"`` -> minute of the day; ``"24:00"`` (1440) only where it may end a span."""
    if isinstance(value, dt.time):  # a TOML local-time literal: 08:00:00
        if value.second or value.microsecond:
            raise ValueError(f"times are whole minutes, got {value.isoformat()}")
        return value.hour * 60 + value.minute
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'expected a time "HH:MM", got {_show(value)}')
    hours, minutes = int(match[1]), int(match[2])
    if allow_end_of_day and (hours, minutes) == (24, 0):
        return MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        hint = ' ("24:00" is allowed only as an end)' if hours == 24 else ""
        raise ValueError(f"no such time of day: {_show(value)}{hint}")
    return hours * 60 + minutes


def parse_listen(value: object) -> ListenAddress:
    if not isinstance(value, str):
        raise ValueError(f'expected "host:port", got {_show(value)}')
    host, colon, port_text = value.rpartition(":")
    if not colon or not host:
        raise ValueError(f'expected "host:port" like "127.0.0.1:8080", got {_show(value)}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'write an IPv6 address in brackets, like "[::1]:8080": {_show(value)}')
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"bad host in {_show(value)}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number 1-65535, got {_show(value)}")
    return ListenAddress(host, int(port_text))


def _show(value: object) -> str:
    """A value as the user wrote it, with its TOML type when that is the mistake."""
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


_SHOWN_CHARS: Final = 60


def _printable(text: str) -> str:
    """``text`` on one line: control characters escaped (``\\x00``, ``\\n``), a long one cut
    short with its length."""
    shown = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    return f"{shown}...({len(text)} characters)" if len(text) > _SHOWN_CHARS else shown


def _quoted(text: str) -> str:
    """A string in double quotes, as the user would recognise it, on one line."""
    return f'"{_printable(text)}"'


_PLAIN_DECIMAL: Final = re.compile(r"[+-]?\d+(?:\.\d*)?")


def _over(value: object, decimals: int, limit: int) -> bool:
    """Whether ``value`` is a plain decimal string of more than ``limit`` minor units (other
    refusals, such as an exponent, keep the money module's words)."""
    if not isinstance(value, str) or not _PLAIN_DECIMAL.fullmatch(value):
        return False
    return abs(Decimal(value).scaleb(decimals)) > limit


def id_problem(value: str, what: str) -> str | None:
    """Why ``value`` cannot be an id storage keeps (``MAX_ID_BYTES``), or None."""
    if not value:
        return f"{what} must not be empty"
    if _CONTROL_CHARS.search(value):
        shown = _quoted(value)
        return f"{what} must not contain control characters (NUL, tab, newline), got {shown}"
    if value != value.strip():
        return f"{what} must not start or end with whitespace, got {_quoted(value)}"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        shown = _quoted(value)
        return f"{what} must be at most {MAX_ID_BYTES} bytes of UTF-8; this one has {size}: {shown}"
    return None


def _type_name(value: object) -> str:
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (dict, "a table"),
        (list, "an array"),
        (dt.datetime, "a date-time"),
        (dt.date, "a date"),
        (dt.time, "a time"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def format_path(path: KeyPath) -> str:
    """``("meters", 3, "tariff")`` -> ``meters[3].tariff`` (keys quoted when not bare)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else _quoted(part)
            text += f".{key}" if text else key
    return text


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {_quoted(close[0])}?)" if close else ""


def _known(choices: Iterable[str], limit: int = 8) -> str:
    names = sorted(choices)
    shown = ", ".join(_printable(name) for name in names[:limit])
    more = f", ... {len(names) - limit} more" if len(names) > limit else ""
    return f"(known: {shown}{more})" if names else "(none defined)"


# --- problem collection --------------------------------------------------------------------


class _Problems:
    """Problems found so far, each at a key path; the same problem at the same path is kept
    once (a bad ``meter_defaults`` value is read by every meter but is one mistake)."""

    def __init__(self) -> None:
        self.items: list[tuple[KeyPath, str, KeyPath | None]] = []
        self._seen: set[tuple[KeyPath, str]] = set()

    def add(self, path: KeyPath, message: str, *, related: KeyPath | None = None) -> None:
        if (path, message) not in self._seen:
            self._seen.add((path, message))
            self.items.append((path, message, related))

    def located(self, text: str, source: str) -> list[Problem]:
        lines = _locate_keys(text)
        problems = []
        for path, message, related in self.items:
            if related is not None:
                related_line = _line_of(lines, related)
                where = f"line {related_line}" if related_line else format_path(related)
                message = f"{message} (first at {where})"
            problems.append(Problem(source, _line_of(lines, path), format_path(path), message))
        # File order reads best; problems without a line (none expected) go last.
        problems.sort(key=lambda p: p.line if p.line is not None else 1 << 62)
        return problems


class _Required:
    """Marks an accessor's key as required (a singleton; None is a legal default)."""


_REQUIRED: Final = _Required()


class _Table:
    """A view of one TOML table that converts and checks its values.

    Accessors never raise: a missing or bad value is recorded at its key path and a placeholder
    of the right type comes back, so reading continues and every problem is reported.
    ``failed`` tells cross-checks which keys to skip (a placeholder is not the user's value).
    ``origins`` maps keys that came from elsewhere (``meter_defaults``) to where they were
    written, so problems point at the line the user has to change.
    """

    def __init__(
        self,
        problems: _Problems,
        path: KeyPath,
        data: Mapping[str, object],
        origins: Mapping[str, KeyPath] | None = None,
    ) -> None:
        self.problems = problems
        self.path = path
        self.data = data
        self.origins = origins or {}
        self.asked: set[str] = set()
        self.failed: set[str] = set()
        self.absent = False  # a missing required table: its own missing keys go unsaid

    def at(self, key: str) -> KeyPath:
        return self.origins.get(key) or (*self.path, key)

    def fail(self, key: str, message: str) -> None:
        self.failed.add(key)
        self.problems.add(self.at(key), message)

    def has(self, key: str) -> bool:
        self.asked.add(key)
        return key in self.data

    def raw(self, key: str, default: object = _REQUIRED) -> object:
        self.asked.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            self.failed.add(key)
            if not self.absent:
                self.problems.add(self.path, f'missing required key "{key}"')
        return default

    def string(
        self, key: str, default: object = _REQUIRED, *, choices: Sequence[str] | None = None
    ) -> str:
        value = self.raw(key, default)
        if key in self.failed:
            return ""
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_type_name(value)} {_show(value)}")
            return ""
        if choices is not None and value not in choices:
            self.fail(
                key,
                f"must be one of {', '.join(choices)}; got {_show(value)}"
                f"{_suggest(value, choices)}",
            )
            return ""
        return value

    def name(self, key: str, what: str) -> str:
        """An identifier others refer to: non-empty, no spaces, no ``/`` (alarm ids are
        ``<meter id>/<number>``, so a slash would make them ambiguous), and one storage can
        keep (:func:`id_problem`)."""
        value = self.string(key)
        if key in self.failed:
            return value
        if not value or "/" in value or any(c.isspace() for c in value):
            self.fail(key, f'{what} must be non-empty without spaces or "/", got {_show(value)}')
        else:
            self.check_id(key, value, what)
        return value

    def check_id(self, key: str, value: str, what: str) -> None:
        problem = id_problem(value, what)
        if problem is not None:
            self.fail(key, problem)

    def integer(self, key: str, default: object = _REQUIRED, *, low: int, high: int) -> int:
        value = self.raw(key, default)
        if key in self.failed:
            return low
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {_type_name(value)} {_show(value)}")
            return low
        if not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}, got {value}")
            return low
        return value

    def number(self, key: str, default: object = _REQUIRED, *, low: float = 0.0) -> float:
        value = self.raw(key, default)
        if key in self.failed:
            return low
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {_type_name(value)} {_show(value)}")
            return low
        if not low <= value < float("inf"):
            self.fail(key, f"must be a finite number >= {low:g}, got {value}")
            return low
        return float(value)

    def boolean(self, key: str, default: object = _REQUIRED) -> bool:
        value = self.raw(key, default)
        if key in self.failed:
            return False
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_type_name(value)} {_show(value)}")
            return False
        return value

    def duration_ms(self, key: str, default: object = _REQUIRED, *, low_ms: int = 1) -> int:
        value = self.raw(key, default)
        if key in self.failed:
            return low_ms
        try:
            ms = _cached_duration_ms(value) if isinstance(value, str) else parse_duration_ms(value)
        except ValueError as error:
            self.fail(key, str(error))
            return low_ms
        if ms < low_ms:
            self.fail(key, f"must be at least {low_ms} ms, got {_show(value)}")
            return low_ms
        return ms

    def amount(self, key: str, decimals: int, default: object = _REQUIRED) -> int:
        """Money in minor units from a decimal string; never negative in a config."""
        value = self.raw(key, default)
        if key in self.failed:
            return 0
        return self._amount(key, value, decimals) or 0

    def _amount(self, key: str, value: object, decimals: int, label: str = "") -> int | None:
        try:
            if isinstance(value, str) and not label:
                minor = _cached_amount(value, decimals)
            else:
                minor = parse_amount(value, decimals, what=label or "amount")
        except MoneyError as error:
            if _over(value, decimals, MAX_AMOUNT_MINOR):
                limit = format_amount(MAX_AMOUNT_MINOR, decimals)
                what = f"{label} must be" if label else "must be"
                self.fail(key, f"{what} at most {limit}, got {_show(value)}")
            else:
                self.fail(key, str(error))
            return None
        if minor < 0:
            self.fail(key, f"{label or 'amount'} must not be negative, got {_show(value)}")
            return None
        return minor

    def amounts(self, key: str, decimals: int) -> tuple[int, ...]:
        values = self.raw(key, [])
        if not isinstance(values, list):
            self.fail(key, f'expected an array of amounts like ["50.00"], got {_show(values)}')
            return ()
        parsed = [self._amount(key, v, decimals, f"{key}[{i}]") for i, v in enumerate(values)]
        return tuple(p for p in parsed if p is not None)

    def price(self, key: str, decimals: int, default: object = _REQUIRED) -> int:
        value = self.raw(key, default)
        if key in self.failed:
            return 0
        try:
            units = parse_price(value, decimals)
        except MoneyError as error:
            self.fail(key, str(error))
            return 0
        if units > _MAX_PRICE_UNITS_PER_WH:
            limit = format_price(_MAX_PRICE_UNITS_PER_WH, decimals)
            self.fail(key, f"a price must be at most {limit} per kWh, got {_show(value)}")
            return 0
        return units

    def minute(self, key: str, default: object = _REQUIRED, *, end: bool = False) -> int:
        value = self.raw(key, default)
        if key in self.failed:
            return 0
        try:
            return parse_minute(value, allow_end_of_day=end)
        except ValueError as error:
            self.fail(key, str(error))
            return 0

    def table(self, key: str, *, required: bool = False) -> _Table:
        value = self.raw(key, _REQUIRED if required else {})
        if key in self.failed:
            absent = _Table(self.problems, self.at(key), {})
            absent.absent = True
            return absent
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {_type_name(value)} {_show(value)}")
            return _Table(self.problems, self.at(key), {})
        return _Table(self.problems, self.at(key), value)

    def tables(self, key: str, *, required: bool = False) -> list[_Table]:
        """An array of tables, written ``[[key]]`` or ``key = [{...}, {...}]``."""
        value = self.raw(key, _REQUIRED if required else [])
        if key in self.failed:
            return []
        if not isinstance(value, list):
            hint = f" (write [[{key}]] for each)" if isinstance(value, dict) else ""
            self.fail(key, f"expected an array of tables{hint}, got {_type_name(value)}")
            return []
        result = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                result.append(_Table(self.problems, (*self.at(key), index), item))
            else:
                self.problems.add(
                    (*self.at(key), index), f"expected a table, got {_type_name(item)}"
                )
                self.failed.add(key)
        return result

    def finish(self) -> None:
        """Report keys nobody asked for: in a config they are typos, not extensions."""
        for key in self.data:
            if key not in self.asked:
                self.problems.add(self.at(key), f"unknown key{_suggest(key, self.asked)}")


# --- reading the document ------------------------------------------------------------------

_POLICY_DEFAULTS: Final = {
    field.name: field.default for field in attrs.fields(MeterPolicy) if field.init
}


class _ParkReader:
    def __init__(self, document: dict[str, object], base_dir: Path) -> None:
        self.problems = _Problems()
        self.root = _Table(self.problems, (), document)
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
        opcua = self.read_opcua(root.table("opcua"))
        users = self.read_users(root.tables("users"))
        audit = self.read_audit(root.table("audit"))
        self.read_profile_files(root)
        tariffs = self.read_tariffs(root.table("tariffs"), calendar)
        gateways = self.read_gateways(root.tables("gateways"))
        defaults = root.table("meter_defaults")
        meters, policies = self.read_meters(root.tables("meters"), defaults, tariffs, gateways)
        root.finish()
        if self.problems.items:
            return None
        return ParkConfig(
            server=server,
            hub=hub,
            http=http,
            opcua=opcua,
            users=users,
            tariffs=tariffs,
            gateways=tuple(gateways.values()),
            meters=meters,
            calendar=calendar,
            policies=policies,
            source=source,
            profiles=self.profiles,
            profile_files=self.profile_files,
            audit=audit,
        )

    # -- sections --

    def read_server(self, t: _Table) -> ServerSection:
        data_dir = t.string("data_dir")
        if "data_dir" not in t.failed and not data_dir.strip():
            t.fail("data_dir", "must not be empty")
        currency = t.string("currency")
        if "currency" not in t.failed and not re.fullmatch(r"[A-Z]{3}", currency):
            t.fail("currency", f'expected an ISO 4217 code like "CNY", got {_show(currency)}')
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

    def read_calendar(self, t: _Table, server_path: KeyPath, server_timezone: str) -> Calendar:
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
                t.problems.add(path, f'unknown time zone {_show(timezone)} (e.g. "Asia/Shanghai")')
        holidays: set[dt.date] = set()
        raw_holidays = t.raw("holidays", [])
        if not isinstance(raw_holidays, list):
            t.fail(
                "holidays",
                f'expected an array of dates like ["2026-10-01"], got {_type_name(raw_holidays)}',
            )
            raw_holidays = []
        for index, item in enumerate(raw_holidays):
            day = self.parse_date(item)
            if day is None:
                t.problems.add(
                    (*t.at("holidays"), index), f'expected a date "YYYY-MM-DD", got {_show(item)}'
                )
            else:
                holidays.add(day)
        weekend: set[int] = set()
        raw_weekend = t.raw("weekend", ["sat", "sun"])
        if not isinstance(raw_weekend, list):
            t.fail("weekend", f"expected an array of day names, got {_type_name(raw_weekend)}")
            raw_weekend = []
        for index, item in enumerate(raw_weekend):
            day_number = WEEKDAYS.get(item.lower()) if isinstance(item, str) else None
            if day_number is None:
                hint = _suggest(item, WEEKDAYS) if isinstance(item, str) else ""
                t.problems.add(
                    (*t.at("weekend"), index),
                    f"expected a day name mon..sun, got {_show(item)}{hint}",
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

    def read_listen(self, t: _Table, default: ListenAddress) -> ListenAddress:
        address = default
        if t.has("listen"):
            try:
                address = parse_listen(t.raw("listen"))
            except ValueError as error:
                t.fail("listen", str(error))
        t.finish()
        return address

    def read_hub(self, t: _Table) -> HubSection:
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

    def read_opcua(self, t: _Table) -> OpcUaSection:
        default = OpcUaSection()
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
            endpoint=endpoint,
            security=cast(Literal["none", "sign-encrypt"], security or default.security),
            certificate=self.base_dir / certificate if certificate else None,
            private_key=self.base_dir / private_key if private_key else None,
        )

    def read_http(self, t: _Table) -> HttpSection:
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
                              f"got {_show(hub_url)}")
        t.finish()
        return HttpSection(listen=listen, hub_url=hub_url)

    def read_users(self, tables: list[_Table]) -> tuple[User, ...]:
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
            if "name" not in t.failed:
                if name in first_at:
                    t.problems.add(t.at("name"), f'duplicate user "{name}"', related=first_at[name])
                else:
                    first_at[name] = t.at("name")
            users.append(
                User(name, password, cast(Literal["viewer", "operator", "admin"], role or "viewer"))
            )
        return tuple(users)

    def read_audit(self, t: _Table) -> AuditSection:
        """``keep``: a duration; days (``"400d"``) besides the usual units, as retention is
        counted in days. At least an hour: the log is pruned hourly."""
        keep_ms = AuditSection().keep_ms
        if t.has("keep"):
            value = t.raw("keep")
            days = _DAYS.fullmatch(value) if isinstance(value, str) else None
            if days is not None:
                keep_ms = int(days[1]) * MS_PER_DAY
                if keep_ms < 3_600_000:
                    t.fail("keep", f"must be at least 1h, got {_show(value)}")
            else:
                try:
                    keep_ms = parse_duration_ms(value)
                except ValueError as error:
                    t.fail("keep", f'{error}; days are written like "{AUDIT_KEEP_DEFAULT}"')
                else:
                    if keep_ms < 3_600_000:
                        t.fail("keep", f"must be at least 1h, got {_show(value)}")
        t.finish()
        return AuditSection(keep_ms)

    # -- meter profiles --

    def read_profile_files(self, root: _Table) -> None:
        """``profile_files = ["profiles/acme-pm100.toml", ...]``: register maps beyond the
        shipped ones, each a file in the format of ``docs/profiles.md``. A file that cannot be
        used, or whose ``name`` is already taken, is a problem at its array element."""
        value = root.raw("profile_files", [])
        if not isinstance(value, list):
            root.fail(
                "profile_files",
                'expected an array of file paths like ["profiles/acme-pm100.toml"], '
                f"got {_type_name(value)} {_show(value)}",
            )
            return
        files: list[Path] = []
        first_at: dict[str, tuple[KeyPath, str]] = {}  # name -> where it was defined
        for index, item in enumerate(value):
            at = (*root.at("profile_files"), index)
            if not isinstance(item, str) or not item.strip():
                self.problems.add(at, f"expected a file path, got {_type_name(item)} {_show(item)}")
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

    def read_tariffs(self, t: _Table, calendar: Calendar) -> dict[str, Tariff]:
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

    def read_tariff(self, name: str, t: _Table, calendar: Calendar) -> Tariff | None:
        kind = t.string("kind", choices=("flat", "tou", "tiered"))
        tariff: Tariff | None = None
        if kind == "flat":
            tariff = Tariff.flat(name, t.price("price", self.decimals), calendar)
        elif kind == "tou":
            bands = self.read_bands(t, "bands", required=True)
            tariff = Tariff(
                name=name,
                bands=bands,
                weekend_bands=self.read_bands(t, "weekend_bands"),
                holiday_bands=self.read_bands(t, "holiday_bands"),
                seasons=tuple(self.read_season(s) for s in t.tables("seasons")),
                # With bands, tier prices are surcharges on the band price (combined tariff).
                tiers=self.read_tiers(t, required=False),
                calendar=calendar,
            )
        elif not kind:
            t.asked.update(t.data)  # without a kind, its other keys are neither right nor wrong
        elif kind == "tiered":
            tariff = Tariff(
                name=name,
                # The band carries no price: the monthly blocks carry all of it.
                bands=(Band("tiered", 0, MINUTES_PER_DAY, 0),),
                tiers=self.read_tiers(t, required=True),
                calendar=calendar,
            )
        t.finish()
        return tariff

    def read_season(self, t: _Table) -> Season:
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
    def read_month_day(t: _Table, key: str) -> tuple[int, int]:
        value = t.string(key)
        if key in t.failed:
            return (1, 1)
        match = _MONTH_DAY.fullmatch(value)
        if match:
            month, day = int(match[1]), int(match[2])
            try:
                dt.date(2024, month, day)  # a leap year: 02-29 is a real day
            except ValueError:
                pass
            else:
                return (month, day)
        t.fail(key, f'expected a day of the year "MM-DD" like "06-01", got {_show(value)}')
        return (1, 1)

    def read_bands(self, t: _Table, key: str, *, required: bool = False) -> tuple[Band, ...]:
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

    def read_tiers(self, t: _Table, *, required: bool) -> tuple[Tier, ...]:
        tiers: list[Tier] = []
        tables = t.tables("tiers", required=required)
        for position, tier in enumerate(tables):
            last = position == len(tables) - 1
            up_to: int | None = None
            if tier.has("up_to_kwh"):
                up_to = self.read_kwh_as_wh(tier, "up_to_kwh")
                if last:
                    tier.fail("up_to_kwh", "the last tier has no cap (leave out up_to_kwh)")
                elif (
                    tiers
                    and tiers[-1].up_to_wh is not None
                    and up_to is not None
                    and up_to <= tiers[-1].up_to_wh
                ):
                    tier.fail("up_to_kwh", "caps must increase from tier to tier")
            elif not last:
                tier.fail("up_to_kwh", "every tier but the last needs up_to_kwh")
            tiers.append(Tier(up_to, tier.price("price", self.decimals)))
            tier.finish()
        return tuple(tiers)

    @staticmethod
    def read_kwh_as_wh(t: _Table, key: str) -> int | None:
        value = t.raw(key)
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        try:
            if not isinstance(text, str):
                raise InvalidOperation
            wh = Decimal(text) * 1000
        except InvalidOperation:
            t.fail(key, f'expected kWh as a decimal string like "1000", got {_show(value)}')
            return None
        if not wh.is_finite() or wh <= 0 or wh != wh.to_integral_value():
            t.fail(key, f"expected a positive energy in whole Wh, got {_show(value)}")
            return None
        if wh > MAX_TIER_KWH * 1000:
            t.fail(key, f"a tier cap must be at most {MAX_TIER_KWH} kWh, got {_show(value)}")
            return None
        return int(wh)

    # -- gateways and meters --

    def read_gateways(self, tables: list[_Table]) -> dict[str, GatewaySection]:
        gateways: dict[str, GatewaySection] = {}
        first_at: dict[str, KeyPath] = {}
        address_at: dict[tuple[str, int], KeyPath] = {}
        for t in tables:
            gateway_id = t.name("id", "a gateway id")
            host = t.string("host")
            if "host" not in t.failed and (not host or any(c.isspace() for c in host)):
                t.fail("host", f"expected a host name or address, got {_show(host)}")
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
            if "id" in t.failed:
                continue
            if gateway_id in first_at:
                t.problems.add(
                    t.at("id"), f'duplicate gateway id "{gateway_id}"', related=first_at[gateway_id]
                )
                continue
            first_at[gateway_id] = t.at("id")
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
        tables: list[_Table],
        defaults: _Table,
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
            t = _Table(self.problems, table.path, merged, origins)
            meter = self.read_meter(t, tariffs, gateways)
            if "id" in t.failed:
                continue
            if meter.id in first_at:
                t.problems.add(
                    t.at("id"), f'duplicate meter id "{meter.id}"', related=first_at[meter.id]
                )
                continue
            first_at[meter.id] = t.at("id")
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
        self, t: _Table, tariffs: dict[str, Tariff], gateways: dict[str, GatewaySection]
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
                f"unknown gateway {_show(gateway)}{_suggest(gateway, gateways)} {_known(gateways)}",
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
                f"{whose}unknown profile {_show(profile)}"
                f"{_suggest(profile, self.profiles)} {_known(self.profiles)}",
            )
        relay_coil = t.integer("relay_coil", 0, low=0, high=MODBUS_ADDRESS_MAX)
        tariff = t.string("tariff")
        if "tariff" not in t.failed and tariff not in self.tariff_names:
            t.fail(
                "tariff",
                f"unknown tariff {_show(tariff)}{_suggest(tariff, self.tariff_names)} "
                f"{_known(self.tariff_names)}",
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
    def max_power(t: _Table, profile: Profile | None) -> float:
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
    def read_friendly(t: _Table) -> FriendlyPeriod:
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


def _too_big_problem(source: str, size: int) -> Problem:
    return Problem(
        source, None, "",
        f"the file is {size / (1 << 20):.1f} MiB, more than the {MAX_CONFIG_BYTES >> 20} MiB a "
        "park config may have (split the park: one server per group of gateways)",
    )


def _syntax_problem(error: tomllib.TOMLDecodeError, source: str) -> Problem:
    text = str(error)
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", text, re.DOTALL)
    if match:
        reason = match[1][:1].lower() + match[1][1:]
        return Problem(
            source, int(match[2]), "", f"TOML syntax error at column {match[3]}: {reason}"
        )
    reason = text.replace(" (at end of document)", "")
    return Problem(source, None, "", f"TOML syntax error at the end of the file: {reason}")


# --- locating key paths in the source ------------------------------------------------------

_WS = re.compile(r"[ \t]*")
_WS_NL_COMMENTS = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STRING = re.compile(r"'[^'\n]*'")
_ML_BASIC = re.compile(r'"""(?:[^\\]|\\.)*?"""{0,2}', re.DOTALL)
_ML_LITERAL = re.compile(r"'''.*?'''{0,2}", re.DOTALL)
_SCALAR = re.compile(r"[^,\]}\n#]*")


def _line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, else of its nearest enclosing table or array element."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _locate_keys(text: str) -> dict[KeyPath, int]:
    """Map key paths to the line (1-based) where each is written; best effort, never raises."""
    scanner = _Scanner(text)
    # A locator bug must never hide the user's real problem: keep what was found so far.
    with contextlib.suppress(Exception):
        scanner.document()
    return scanner.lines


class _Scanner:
    """Just enough of a TOML reader to know where keys are. It runs on text ``tomllib``
    has accepted, so it skips values rather than checking them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._array_counts: dict[KeyPath, int] = {}
        self._last_loop_pos = -1

    def line(self, pos: int | None = None) -> int:
        return bisect.bisect_left(self._newlines, self.pos if pos is None else pos) + 1

    def mark(self, path: KeyPath, pos: int | None = None) -> None:
        self.lines.setdefault(path, self.line(pos))

    def skip(self, pattern: re.Pattern[str]) -> None:
        match = pattern.match(self.text, self.pos)
        if match:
            self.pos = match.end()

    def must_advance(self, pos: int) -> None:
        """Stop a loop that made no progress: a scanner bug must end in a fallback, not a hang."""
        if pos == self._last_loop_pos:
            raise RuntimeError(f"scanner stuck at offset {pos}")
        self._last_loop_pos = pos

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip(_WS_NL_COMMENTS)
            if self.pos >= len(self.text):
                return
            start = self.pos
            self.must_advance(start)
            if self.peek("[["):
                self.pos += 2
                table = self.header(self.key(), array=True, pos=start)
                self.pos = self.text.index("]]", self.pos) + 2
            elif self.peek("["):
                self.pos += 1
                table = self.header(self.key(), array=False, pos=start)
                self.pos = self.text.index("]", self.pos) + 1
            else:
                self.key_value(table)

    def header(self, parts: list[str], *, array: bool, pos: int) -> KeyPath:
        path: KeyPath = ()
        for number, part in enumerate(parts):
            path = (*path, part)
            self.mark(path, pos)
            last = number == len(parts) - 1
            if last and array:
                index = self._array_counts.get(path, 0)
                self._array_counts[path] = index + 1
                path = (*path, index)
                self.mark(path, pos)
            elif path in self._array_counts:
                # [[a]] then [a.b] or [[a.b]]: b belongs to the latest element of a.
                path = (*path, self._array_counts[path] - 1)
        return path

    def key(self) -> list[str]:
        parts = []
        while True:
            self.skip(_WS)
            if self.peek('"'):
                match = _BASIC_STRING.match(self.text, self.pos)
                assert match is not None
                parts.append(tomllib.loads(f"k = {match[0]}")["k"])
            elif self.peek("'"):
                match = _LITERAL_STRING.match(self.text, self.pos)
                assert match is not None
                parts.append(match[0][1:-1])
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                assert match is not None
                parts.append(match[0])
            self.pos = match.end()
            self.skip(_WS)
            if not self.peek("."):
                return parts
            self.pos += 1

    def key_value(self, table: KeyPath) -> None:
        start = self.pos
        path = table
        for part in self.key():
            path = (*path, part)
            self.mark(path, start)
        self.skip(_WS)
        self.pos += 1  # "="
        self.skip(_WS)
        self.value(path)

    def value(self, path: KeyPath) -> None:
        for opener, pattern in (
            ('"""', _ML_BASIC),
            ("'''", _ML_LITERAL),
            ('"', _BASIC_STRING),
            ("'", _LITERAL_STRING),
        ):
            if self.peek(opener):
                match = pattern.match(self.text, self.pos)
                assert match is not None
                self.pos = match.end()
                return
        if self.peek("["):
            self.pos += 1
            for index in _count():
                self.skip(_WS_NL_COMMENTS)
                self.must_advance(self.pos)
                if self.peek("]"):
                    self.pos += 1
                    return
                self.mark((*path, index))
                self.value((*path, index))
                self.skip(_WS_NL_COMMENTS)
                if self.peek(","):
                    self.pos += 1
        elif self.peek("{"):
            self.pos += 1
            while True:
                self.skip(_WS_NL_COMMENTS)
                self.must_advance(self.pos)
                if self.peek("}"):
                    self.pos += 1
                    return
                if self.peek(","):
                    self.pos += 1
                    continue
                self.key_value(path)
        else:
            self.skip(_SCALAR)


def _count() -> Iterator[int]:
    index = 0
    while True:
        yield index
        index += 1
