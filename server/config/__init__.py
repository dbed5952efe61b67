"""The park configuration: a TOML file turned into frozen, validated records.

Theory of operation
-------------------
Loading is three passes over one file, and nothing is started unless all three succeed:

1. **Syntax.** ``tomllib`` parses the text into plain dicts. Its errors already carry a line and
   column; they are reworded into the same ``file:line: ...`` shape as everything else. A file
   above ``MAX_CONFIG_BYTES`` is refused unread, and one nested deeper than
   ``protocols.toml.limits.MAX_NESTING`` is refused with its line before ``tomllib``'s
   recursion could end in a traceback.
2. **Validation.** Each table is read through a :class:`~server.config.toolkit.Table` view
   (``protocols.toml.toolkit``'s, with money, prices, times and ids added) that knows its key
   path (``meters[3]``) and remembers which keys were asked for. Every accessor converts and
   checks one value (durations, money, times, addresses, Modbus ranges) and, on a
   bad value, records a problem and returns a harmless placeholder instead of raising, so that
   *every* problem in the file is found in one run. A key nobody asked for is a typo and gets a
   "did you mean" suggestion. Values must also be ones storage can keep (ids within
   ``MAX_ID_BYTES`` and without control characters, money within ``MAX_AMOUNT_MINOR``, prices
   within ``MAX_PRICE_MINOR_PER_KWH``): refused here with their line, they cannot surface later
   as a refused top-up or a skipped snapshot. Cross-references (a meter's tariff and gateway,
   duplicate ids, duplicate Modbus addresses) are checked once all sections are read. The
   Modbus profiles are resolved here too: the shipped ones plus the files named by
   ``profile_files`` (loaded with ``protocols.modbus.profiles.load_profile_file``), so a
   meter's ``profile`` and ``kind`` are checked against real register maps and the config hands
   the field and the simulator the very ``Profile`` objects it checked against.
3. **Locating.** Only if there were problems: ``tomllib`` reports no positions, so a small
   scanner (``protocols.toml.locate``) walks the (already valid) source text and maps every key
   path to the line where it is written: tables, arrays of tables counted by index, inline
   tables in arrays, dotted keys. A path it cannot find falls back to its nearest enclosing
   table, and the scanner never raises: a problem is reported without a line rather than not at
   all. Doing this lazily keeps a 100k-meter file's happy path free of the cost.

The records are the business model (integers in minor units, Wh, ms; ``policies`` records for
tariffs and calendars); the TOML spelling ("100.00", "08:00") exists only in this package and,
for what every file shares such as durations ("2s"), in ``protocols.toml.values``.
Meters with identical policy parameters share one :class:`~policies.meter_policy.MeterPolicy`
(interned by value), so a park of 100k meters holds a handful of policy objects, not 100k.

The package, a module per job: ``records`` (what a valid park is), ``values`` (the park's own
value syntax), ``toolkit`` (the park's table: money, prices, times, ids), ``reader`` (the park
document), ``loading`` (files and texts in, a park out). What every TOML file we read shares
(the nesting limit, the table toolkit, problems and their lines, durations, "did you mean")
lives below, in ``protocols.toml``, so that the profile and scenario loaders use it too.
"""

from __future__ import annotations

from protocols.toml.locate import locate_keys
from protocols.toml.problems import Problem
from protocols.toml.values import KeyPath, parse_duration_ms
from server.config.loading import load_config, parse_config
from server.config.records import (
    MAX_CONFIG_BYTES,
    AuditSection,
    ConfigError,
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
from server.config.values import parse_listen, parse_minute

__all__ = [
    "MAX_CONFIG_BYTES", "AuditSection", "ConfigError", "GatewaySection", "HttpSection",
    "HubSection", "KeyPath", "ListenAddress", "MeterSection", "OpcUaSection", "ParkConfig",
    "PaymentKey", "Problem", "ServerSection", "User", "load_config", "locate_keys", "parse_config",
    "parse_duration_ms", "parse_listen", "parse_minute",
]
