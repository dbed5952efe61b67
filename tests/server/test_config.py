"""The park config: the contract's example, every refusal with its line, sharing, and speed."""

from __future__ import annotations

import re
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.meter_policy import FriendlyPeriod
from policies.money import parse_price
from policies.tariff_records import Band, Tier
from server.config import (
    ConfigError,
    ListenAddress,
    ParkConfig,
    load_config,
    locate_keys,
    parse_duration_ms,
    parse_listen,
    parse_minute,
)
from tests.profile_texts import ACME_PM100

REPO = Path(__file__).resolve().parents[2]

# CONTRACT.md section 2, verbatim.
CONTRACT_EXAMPLE = """\
[server]
data_dir = "var/park"          # LMDB environment lives here
currency = "CNY"

[hub]
listen = "127.0.0.1:8765"      # websocket hub

[http]
listen = "127.0.0.1:8080"      # browser console + REST API

[opcua]
endpoint = "opc.tcp://127.0.0.1:4840/wattkeeper/"
security = "none"              # "none" is for tests and demo only; "sign-encrypt" is the default

[[users]]
name = "op"
password = "op-secret"
role = "operator"              # viewer | operator | admin

[[payment_keys]]                # a payment integration (section 4)
id = "wechat"
secret = "change-me-32-bytes-or-more......"

[tariffs.flat]
kind = "flat"
price = "1.00"                 # per kWh

[tariffs.tou]
kind = "tou"
bands = [
  { name = "valley", start = "00:00", end = "08:00", price = "0.40" },
  { name = "flat",   start = "08:00", end = "18:00", price = "0.80" },
  { name = "peak",   start = "18:00", end = "24:00", price = "1.20" },
]

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = 5020
poll_interval = "1s"

[[meters]]
id = "M-0001"
tenant = "acme"
gateway = "gw1"
unit = 1                       # Modbus unit id behind the gateway
profile = "sdm630"             # register map, see section 5
relay_coil = 0                 # coil on the same unit: 1 = supply connected, 0 = cut
tariff = "flat"
overload_w = 30000             # trip above this for longer than overload_delay
overload_delay = "2s"
alarm_levels = ["50.00", "20.00"]
opening_balance = "100.00"
"""

# A park with two gateways and two meters; tests append or substitute lines.
BASE = """\
[server]
data_dir = "var/park"
currency = "CNY"

[[users]]
name = "op"
password = "op-secret"
role = "operator"

[tariffs.flat]
kind = "flat"
price = "1.00"

[tariffs.tou]
kind = "tou"
bands = [
  { name = "valley", start = "00:00", end = "08:00", price = "0.40" },
  { name = "flat",   start = "08:00", end = "18:00", price = "0.80" },
  { name = "peak",   start = "18:00", end = "24:00", price = "1.20" },
]

[[gateways]]
id = "gw1"
host = "127.0.0.1"
port = 5020

[[gateways]]
id = "gw2"
host = "127.0.0.1"
port = 5021

[[meters]]
id = "M-1"
tenant = "acme"
gateway = "gw1"
unit = 1
profile = "sdm630"
tariff = "flat"
overload_w = 30000
alarm_levels = ["50.00", "20.00"]
opening_balance = "100.00"

[[meters]]
id = "M-2"
tenant = "beta"
gateway = "gw1"
unit = 2
profile = "sdm120"
tariff = "tou"
overload_w = 30000
alarm_levels = ["50.00", "20.00"]
opening_balance = "100.00"
"""


def load(text: str, *, base_dir: Path | None = None) -> ParkConfig:
    return ParkConfig.from_toml_text(text, "park.toml", base_dir=base_dir)


def problems(text: str, *, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text, base_dir=base_dir)
    return str(caught.value).splitlines()


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line of the n-th line containing ``fragment`` (what the user would look at)."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    return hits[occurrence - 1]


def replace(text: str, old: str, new: str, occurrence: int = 1) -> str:
    parts = text.split(old)
    assert len(parts) > occurrence, f"{old!r} occurs fewer than {occurrence} times"
    return old.join(parts[:occurrence]) + new + old.join(parts[occurrence:])


def single_problem(text: str, **kwargs: Path | None) -> str:
    found = problems(text, **kwargs)
    assert len(found) == 1, found
    return found[0]


# --- the contract -------------------------------------------------------------------------


def test_contract_example_loads_with_the_right_numbers(tmp_path: Path) -> None:
    path = tmp_path / "park.toml"
    path.write_text(CONTRACT_EXAMPLE)
    config = load_config(path)

    assert config.server.data_dir == tmp_path / "var" / "park"  # relative to the file
    assert config.server.currency == "CNY"
    assert config.server.decimals == 2
    assert config.hub.listen == ListenAddress("127.0.0.1", 8765)
    assert config.http.listen == ListenAddress("127.0.0.1", 8080)
    assert config.opcua.endpoint == "opc.tcp://127.0.0.1:4840/wattkeeper/"
    assert config.opcua.security == "none"
    assert [(u.name, u.password, u.role) for u in config.users] == [("op", "op-secret", "operator")]
    assert [(k.id, k.secret) for k in config.payment_keys] == [
        ("wechat", "change-me-32-bytes-or-more......")]

    assert config.tariffs["flat"].bands == (Band("flat", 0, 1440, parse_price("1.00")),)
    assert [(b.name, b.start_min, b.end_min, b.price) for b in config.tariffs["tou"].bands] == [
        ("valley", 0, 480, parse_price("0.40")),
        ("flat", 480, 1080, parse_price("0.80")),
        ("peak", 1080, 1440, parse_price("1.20")),
    ]

    (gateway,) = config.gateways
    assert (gateway.id, gateway.host, gateway.port) == ("gw1", "127.0.0.1", 5020)
    assert gateway.poll_interval_ms == 1000
    assert gateway.transport == "tcp"

    (meter,) = config.meters
    assert (meter.id, meter.tenant, meter.gateway, meter.unit) == ("M-0001", "acme", "gw1", 1)
    assert (meter.profile, meter.relay_coil, meter.tariff) == ("sdm630", 0, "flat")
    assert meter.kind == "electricity"
    assert meter.opening_balance == 10000
    policy = config.policies["M-0001"]
    assert policy is meter.policy
    assert policy.tariff is config.tariffs["flat"]
    assert policy.overload_w == 30000
    assert policy.overload_delay_ms == 2000
    assert policy.alarm_levels == (5000, 2000)
    assert policy.decimals == 2
    assert meter.overload_w == 30000 and meter.alarm_levels == (5000, 2000)


def test_from_text_takes_relative_paths_from_base_dir(tmp_path: Path) -> None:
    config = ParkConfig.from_toml_text(CONTRACT_EXAMPLE, "x.toml", base_dir=tmp_path)
    assert config.server.data_dir == tmp_path / "var/park"


def test_example_park_loads() -> None:
    config = load_config(REPO / "examples" / "park.toml")
    assert {g.id for g in config.gateways} == {"gw-workshops", "gw-dorms"}
    assert {m.kind for m in config.meters} == {"electricity", "water", "gas"}
    assert (config.tariffs["water"].unit, config.tariffs["gas"].unit) == ("m3", "m3")
    assert config.calendar.timezone == "Asia/Shanghai"
    assert config.calendar.weekend_days == frozenset({5, 6})
    industrial = config.tariffs["industrial"]
    assert industrial.seasons[0].name == "summer"
    assert industrial.seasons[0].start == (7, 1) and industrial.seasons[0].end == (8, 31)
    assert industrial.calendar is config.calendar
    # The wrapping valley band 23:00-07:00 became two records of the same name.
    assert industrial.bands[0] == Band("valley", 0, 420, parse_price("0.35"))
    assert industrial.bands[-1] == Band("valley", 1380, 1440, parse_price("0.35"))
    dorm = config.policies["DORM-A101"]
    assert dorm is config.policies["DORM-A102"]
    assert dorm.friendly == (FriendlyPeriod(1200, 480), FriendlyPeriod(0, 0, True, True))
    assert config.policies["WS-01"].friendly == ()
    dorms = [m.id for m in config.meters if m.gateway == "gw-dorms"]
    assert dorms == ["DORM-A101", "DORM-A102", "WATER-A", "GAS-CANTEEN"]


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("2s", 2000), ("1.5s", 1500), ("5m", 300_000), ("1h", 3_600_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["2", 2000, "2 sec", "15min", "-1s", "0.5ms", "", "1d"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(text)


def test_times_allow_24_00_only_as_an_end() -> None:
    assert parse_minute("08:30") == 510
    assert parse_minute("24:00", allow_end_of_day=True) == 1440
    for bad in ("24:00", "8:00", "12:60", "25:00", 800):
        with pytest.raises(ValueError):
            parse_minute(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ListenAddress("127.0.0.1", 8080)),
        ("0.0.0.0:1", ListenAddress("0.0.0.0", 1)),
        ("[::1]:65535", ListenAddress("::1", 65535)),
        ("localhost:80", ListenAddress("localhost", 80)),
    ],
)
def test_listen_addresses(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected
    assert str(expected) == text


# --- errors, each with its line -----------------------------------------------------------


def test_toml_syntax_error_is_reworded_with_its_line() -> None:
    text = replace(BASE, 'tenant = "beta"', 'tenant = "beta')
    (problem,) = problems(text)
    line = line_of(text, 'tenant = "beta')
    assert problem.startswith(f"park.toml:{line}: TOML syntax error at column ")


def test_unknown_tariff() -> None:
    text = replace(BASE, 'tariff = "tou"', 'tariff = "tuo"')
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'tuo')}: meters[1].tariff: "
        'unknown tariff "tuo" (did you mean "tou"?) (known: flat, tou)'
    )


def test_duplicate_meter_id_points_at_both() -> None:
    text = replace(BASE, 'id = "M-2"', 'id = "M-1"')
    first, second = line_of(text, 'id = "M-1"', 1), line_of(text, 'id = "M-1"', 2)
    assert single_problem(text) == (
        f'park.toml:{second}: meters[1].id: duplicate meter id "M-1" (first at line {first})'
    )


def test_duplicate_gateway_id() -> None:
    text = replace(BASE, 'id = "gw2"', 'id = "gw1"')
    second = line_of(text, 'id = "gw1"', 2)
    assert single_problem(text).startswith(
        f'park.toml:{second}: gateways[1].id: duplicate gateway id "gw1" (first at line '
    )


def test_two_gateways_at_one_address() -> None:
    text = replace(BASE, "port = 5021", "port = 5020")
    assert single_problem(text).startswith(
        f"park.toml:{line_of(text, 'port = 5020', 2)}: gateways[1].port: 127.0.0.1:5020 is "
        "already another gateway's address"
    )


def test_meter_on_unknown_gateway() -> None:
    text = replace(BASE, 'gateway = "gw1"', 'gateway = "gw-1"', 2)
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'gw-1')}: meters[1].gateway: "
        'unknown gateway "gw-1" (did you mean "gw1"?) (known: gw1, gw2)'
    )


def test_duplicate_unit_on_a_gateway() -> None:
    text = replace(BASE, "unit = 2", "unit = 1")
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'unit = 1', 2)}: meters[1].unit: "
        f'unit 1 on gateway "gw1" is already meter "M-1" (first at line '
        f"{line_of(text, 'unit = 1', 1)})"
    )


def test_same_unit_on_different_gateways_is_fine() -> None:
    text = replace(replace(BASE, "unit = 2", "unit = 1"), 'gateway = "gw1"', 'gateway = "gw2"', 2)
    assert len(load(text).meters) == 2


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":8080", "127.0.0.1:http", "::1:80", "8080"],
)
def test_bad_listen_address(address: str) -> None:
    text = BASE + f'\n[hub]\nlisten = "{address}"\n'
    problem = single_problem(text)
    assert problem.startswith(f"park.toml:{line_of(text, 'listen =')}: hub.listen: ")


def test_bad_opcua_endpoint() -> None:
    text = BASE + '\n[opcua]\nendpoint = "tcp://127.0.0.1:4840/"\nsecurity = "none"\n'
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'endpoint')}: opcua.endpoint: "
        'must start with "opc.tcp://", got "tcp://127.0.0.1:4840/"'
    )


def test_opcua_security_defaults_to_sign_encrypt() -> None:
    assert load(BASE).opcua.security == "sign-encrypt"
    text = BASE + '\n[opcua]\nsecurity = "sign"\n'
    assert "must be one of none, sign-encrypt" in single_problem(text)


def test_negative_price() -> None:
    text = replace(BASE, 'price = "0.80"', 'price = "-0.80"')
    assert single_problem(text).startswith(
        f"park.toml:{line_of(text, '-0.80')}: tariffs.tou.bands[1].price: "
        "price must not be negative"
    )


@pytest.mark.parametrize("price", ['"1,00"', '"abc"', "1.0", '"0.0000001"'])
def test_malformed_price(price: str) -> None:
    text = replace(BASE, 'price = "1.00"', f"price = {price}")
    assert single_problem(text).startswith(
        f"park.toml:{line_of(text, f'price = {price}')}: tariffs.flat.price: "
    )


@pytest.mark.parametrize("amount", ['"-5.00"', '"100.001"', "100", '"lots"'])
def test_bad_opening_balance(amount: str) -> None:
    text = replace(BASE, 'opening_balance = "100.00"', f"opening_balance = {amount}")
    assert single_problem(text).startswith(
        f"park.toml:{line_of(text, amount)}: meters[0].opening_balance: "
    )


def test_unknown_role() -> None:
    text = replace(BASE, 'role = "operator"', 'role = "operater"')
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'operater')}: users[0].role: must be one of viewer, "
        'operator, admin; got "operater" (did you mean "operator"?)'
    )


def test_duplicate_user_and_password_kept_out_of_repr() -> None:
    config = load(BASE)
    assert "op-secret" not in repr(config.users)
    text = BASE + '\n[[users]]\nname = "op"\npassword = "x"\nrole = "viewer"\n'
    assert 'duplicate user "op"' in single_problem(text)


def test_unknown_key_suggests_the_right_one() -> None:
    text = replace(BASE, "overload_w = 30000", "overlaod_w = 30000")
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'overlaod_w')}: meters[0].overlaod_w: "
        'unknown key (did you mean "overload_w"?)'
    )


def test_unknown_section_suggests_the_right_one() -> None:
    text = BASE + '\n[opcau]\nendpoint = "opc.tcp://x:4840/"\n'
    assert single_problem(text) == (
        f'park.toml:{line_of(text, "[opcau]")}: opcau: unknown key (did you mean "opcua"?)'
    )


def test_missing_required_key_points_at_its_table() -> None:
    text = replace(BASE, 'tenant = "beta"\n', "")
    assert single_problem(text) == (
        f'park.toml:{line_of(text, "[[meters]]", 2)}: meters[1]: missing required key "tenant"'
    )


def test_missing_server_section() -> None:
    text = BASE.replace('[server]\ndata_dir = "var/park"\ncurrency = "CNY"\n', "")
    assert single_problem(text) == 'park.toml: missing required key "server"'


@pytest.mark.parametrize("duration", ['"2"', "2000", '"2 sec"', '"15min"'])
def test_bad_duration_in_a_meter(duration: str) -> None:
    text = replace(BASE, "overload_w = 30000", f"overload_w = 30000\noverload_delay = {duration}")
    assert single_problem(text).startswith(
        f"park.toml:{line_of(text, 'overload_delay')}: meters[0].overload_delay: expected a "
        "duration"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("unit = 0", "unit: must be between 1 and 247, got 0"),
        ("unit = 248", "unit: must be between 1 and 247, got 248"),
        ("relay_coil = -1", "relay_coil: must be between 0 and 65535, got -1"),
        ("relay_coil = 65536", "relay_coil: must be between 0 and 65535, got 65536"),
    ],
)
def test_modbus_ranges(line: str, message: str) -> None:
    text = replace(BASE, "unit = 2", f"unit = 2\n{line}" if "coil" in line else line)
    assert single_problem(text) == f"park.toml:{line_of(text, line)}: meters[1].{message}"


def test_alarm_levels_must_decrease() -> None:
    text = replace(BASE, 'alarm_levels = ["50.00", "20.00"]', 'alarm_levels = ["20.00", "50.00"]')
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'alarm_levels')}: meters[0].alarm_levels: "
        "levels must decrease (highest first): 20.00 then 50.00"
    )


def test_unknown_profile_is_refused_with_a_suggestion() -> None:
    text = replace(BASE, 'profile = "sdm120"', 'profile = "sdm12"')
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'sdm12')}: meters[1].profile: meter \"M-2\": unknown "
        'profile "sdm12" (did you mean "sdm120"?) (known: gas, sdm120, sdm630, water)'
    )


def test_unknown_default_profile_is_reported_once_at_its_line() -> None:
    text = BASE.replace('profile = "sdm630"\n', "").replace('profile = "sdm120"\n', "")
    text = text.replace("[[meters]]", '[meter_defaults]\nprofile = "sdm63"\n\n[[meters]]', 1)
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'sdm63')}: meter_defaults.profile: unknown profile "
        '"sdm63" (did you mean "sdm630"?) (known: gas, sdm120, sdm630, water)'
    )


def test_serve_refuses_an_unknown_profile_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import EXIT_FAILURE, main

    path = tmp_path / "park.toml"
    path.write_text(replace(BASE, 'profile = "sdm120"', 'profile = "sdm999"'))
    assert main(["serve", "--config", str(path)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert 'meters[1].profile: meter "M-2": unknown profile "sdm999"' in err
    assert "(known: " in err and "sdm630" in err
    assert "Traceback" not in err
    assert not (tmp_path / "var").exists()  # refused before anything started


@pytest.mark.parametrize(
    ("lines", "slots"),
    [("", 0), ("window = 1", 0), ("window = 8", 1), ("window = 8\ncommand_slots = 0", 0),
     ("window = 1\ncommand_slots = 2", 2)],
)
def test_command_slots_default_to_one_on_a_pipelining_gateway(lines: str, slots: int) -> None:
    text = replace(BASE, "port = 5020", f"port = 5020\n{lines}")
    assert load(text).gateways[0].command_slots == slots


@pytest.mark.parametrize("value", ["-1", "17", '"1"'])
def test_bad_command_slots_are_refused(value: str) -> None:
    text = replace(BASE, "port = 5020", f"port = 5020\ncommand_slots = {value}")
    assert single_problem(text).startswith(
        f"park.toml:{line_of(text, 'command_slots')}: gateways[0].command_slots: "
    )


def test_wrong_types_are_named() -> None:
    text = replace(BASE, "unit = 2", 'unit = "2"')
    assert single_problem(text).endswith('meters[1].unit: expected an integer, got a string "2"')


def test_bad_ids_are_refused() -> None:
    text = replace(BASE, 'id = "M-2"', 'id = "M/2"')
    assert 'meters[1].id: a meter id must be non-empty without spaces or "/"' in single_problem(
        text
    )


def test_all_problems_are_reported_together_in_file_order() -> None:
    text = replace(BASE, 'price = "1.00"', 'price = "-1.00"')
    text = replace(text, "port = 5021", "port = 0")
    text = replace(text, 'tariff = "tou"', 'tariff = "nope"')
    text = replace(text, "overload_w = 30000", "overlaod_w = 30000")
    found = problems(text)
    assert [int(p.split(":")[1]) for p in found] == [
        line_of(text, "-1.00"),
        line_of(text, "port = 0"),
        line_of(text, "overlaod_w"),
        line_of(text, "nope"),
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "latin1.toml").write_bytes(b'[server]\ndata_dir = "\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "latin1.toml")


# --- tariffs ------------------------------------------------------------------------------

TOU_HEAD = BASE + '\n[tariffs.x]\nkind = "tou"\n'


def test_band_overlap_names_both_bands() -> None:
    text = TOU_HEAD + (
        "bands = [\n"
        '  { name = "a", start = "00:00", end = "09:00", price = "0.40" },\n'
        '  { name = "b", start = "08:00", end = "24:00", price = "0.80" },\n'
        "]\n"
    )
    line = line_of(text, 'name = "b"')
    assert single_problem(text) == (
        f"park.toml:{line}: tariffs.x.bands[1]: 08:00-24:00 overlaps 00:00-09:00 (bands[0])"
    )


def test_band_gap_and_uncovered_end() -> None:
    text = TOU_HEAD + (
        "bands = [\n"
        '  { name = "a", start = "00:00", end = "08:00", price = "0.40" },\n'
        '  { name = "b", start = "09:00", end = "23:00", price = "0.80" },\n'
        "]\n"
    )
    bands_line = line_of(text, "bands = [", 2)
    assert problems(text) == [
        f"park.toml:{bands_line}: tariffs.x.bands: 08:00-09:00 is not covered by any band",
        f"park.toml:{bands_line}: tariffs.x.bands: 23:00-24:00 is not covered by any band",
    ]


def test_wrapping_band_and_24_00_as_start() -> None:
    text = TOU_HEAD + (
        "bands = [\n"
        '  { name = "valley", start = "22:00", end = "06:00", price = "0.30" },\n'
        '  { name = "day", start = "06:00", end = "22:00", price = "0.90" },\n'
        "]\n"
    )
    assert [(b.name, b.start_min, b.end_min) for b in load(text).tariffs["x"].bands] == [
        ("valley", 0, 360),
        ("day", 360, 1320),
        ("valley", 1320, 1440),
    ]
    bad = replace(text, 'start = "06:00"', 'start = "24:00"')
    assert "tariffs.x.bands[1].start: no such time of day" in problems(bad)[0]


def test_tiered_tariff_is_one_free_band_plus_tiers() -> None:
    text = BASE + (
        '\n[tariffs.dorm]\nkind = "tiered"\ntiers = [\n'
        '  { up_to_kwh = "1000", price = "0.50" },\n'
        '  { price = "0.80" },\n]\n'
    )
    tariff = load(text).tariffs["dorm"]
    assert tariff.bands == (Band("tiered", 0, 1440, 0),)
    assert tariff.tiers == (Tier(1_000_000, parse_price("0.50")), Tier(None, parse_price("0.80")))


def test_tier_rules() -> None:
    text = BASE + (
        '\n[tariffs.dorm]\nkind = "tiered"\ntiers = [\n'
        '  { up_to_kwh = "1000", price = "0.50" },\n'
        '  { up_to_kwh = "500", price = "0.60" },\n'
        '  { up_to_kwh = "2000", price = "0.80" },\n]\n'
    )
    assert problems(text) == [
        f"park.toml:{line_of(text, '500')}: tariffs.dorm.tiers[1].up_to_kwh: "
        "caps must increase from tier to tier",
        f"park.toml:{line_of(text, '2000')}: tariffs.dorm.tiers[2].up_to_kwh: "
        "the last tier has no cap (leave out up_to_kwh)",
    ]


def test_combined_tariff_and_seasons_as_arrays_of_tables() -> None:
    text = TOU_HEAD + (
        'bands = [{ name = "all", start = "00:00", end = "24:00", price = "0.60" }]\n'
        'tiers = [{ up_to_kwh = 100, price = "0" }, { price = "0.10" }]\n'
        "\n[[tariffs.x.seasons]]\n"
        'name = "summer"\nfrom = "06-01"\nto = "08-31"\n'
        "bands = [\n"
        '  { name = "cool", start = "00:00", end = "12:00", price = "0.50" },\n'
        '  { name = "hot", start = "12:00", end = "24:00", price = "0.90" },\n'
        "]\n"
        'weekend_bands = [{ name = "all", start = "00:00", end = "24:00", price = "0.40" }]\n'
        "\n[[tariffs.x.seasons]]\n"
        'name = "winter"\nfrom = "12-01"\nto = "02-28"\n'
        'bands = [{ name = "all", start = "00:00", end = "24:00", price = "0.70" }]\n'
    )
    tariff = load(text).tariffs["x"]
    assert tariff.tiers == (Tier(100_000, 0), Tier(None, parse_price("0.10")))
    summer, winter = tariff.seasons
    assert (summer.start, summer.end, winter.start, winter.end) == (
        (6, 1),
        (8, 31),
        (12, 1),
        (2, 28),
    )
    assert [b.name for b in summer.bands] == ["cool", "hot"]
    assert summer.weekend_bands[0].price == parse_price("0.40")

    # An error inside the second season's bands points at that line.
    bad = replace(text, 'price = "0.70"', 'price = "0.7x"')
    assert single_problem(bad).startswith(
        f"park.toml:{line_of(bad, '0.7x')}: tariffs.x.seasons[1].bands[0].price: "
    )
    bad = replace(text, 'to = "02-28"', 'to = "02-30"')
    assert single_problem(bad).startswith(
        f"park.toml:{line_of(bad, '02-30')}: tariffs.x.seasons[1].to: expected a day of the year"
    )


def test_flat_tariff_refuses_band_keys() -> None:
    text = replace(BASE, 'price = "1.00"', 'price = "1.00"\nbands = []')
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'bands = []')}: tariffs.flat.bands: unknown key"
    )


def test_unknown_tariff_kind_does_not_cascade() -> None:
    text = replace(BASE, 'kind = "flat"', 'kind = "fixed"')
    assert single_problem(text).startswith(
        f"park.toml:{line_of(text, 'fixed')}: tariffs.flat.kind: must be one of flat, tou, tiered"
    )


# --- calendar -----------------------------------------------------------------------------


def test_calendar_is_shared_by_every_tariff() -> None:
    text = BASE + (
        '\n[calendar]\ntimezone = "Asia/Shanghai"\n'
        'holidays = ["2026-10-01", 2026-10-02]\nweekend = ["Sun"]\n'
    )
    config = load(text)
    assert config.calendar.timezone == config.server.timezone == "Asia/Shanghai"
    assert len(config.calendar.holidays) == 2
    assert config.calendar.weekend_days == frozenset({6})
    assert all(t.calendar is config.calendar for t in config.tariffs.values())


def test_calendar_errors() -> None:
    text = BASE + (
        '\n[calendar]\ntimezone = "Asia/Shangai"\nholidays = ["2026-13-01"]\nweekend = ["sta"]\n'
    )
    assert problems(text) == [
        f"park.toml:{line_of(text, 'Shangai')}: calendar.timezone: unknown time zone "
        '"Asia/Shangai" (e.g. "Asia/Shanghai")',
        f"park.toml:{line_of(text, '2026-13-01')}: calendar.holidays[0]: expected a date "
        '"YYYY-MM-DD", got "2026-13-01"',
        f"park.toml:{line_of(text, 'weekend =')}: calendar.weekend[0]: "
        "expected a day name mon..sun, "
        'got "sta" (did you mean "sat"?)',
    ]


# --- meter defaults and policy sharing ----------------------------------------------------


def test_meter_defaults_apply_and_meter_keys_override() -> None:
    text = BASE.replace("[[meters]]", "[[meters]]", 1)
    text = replace(
        text,
        "\n[[meters]]",
        (
            '\n[meter_defaults]\nprofile = "sdm120"\noverload_w = 7000\n'
            'emergency_credit = "10.00"\n'
            "offline_opens_relay = true\n"
            'friendly = [{ start = "22:00", end = "06:00" }]\n\n[[meters]]'
        ),
    )
    text += '\n[[meters]]\nid = "M-3"\ntenant = "c"\ngateway = "gw2"\nunit = 1\ntariff = "flat"\n'
    config = load(text)
    m1, _, m3 = config.meters
    assert m1.profile == "sdm630" and m1.overload_w == 30000  # its own keys win
    assert m3.profile == "sdm120" and m3.overload_w == 7000
    assert m3.emergency_credit == 1000 and m3.offline_opens_relay
    assert m3.friendly == (FriendlyPeriod(1320, 360),)
    assert m3.alarm_levels == () and m3.opening_balance == 0


def test_bad_default_is_reported_once_at_its_own_line() -> None:
    meters = "".join(
        f'\n[[meters]]\nid = "D-{n}"\ntenant = "t"\ngateway = "gw2"\nunit = {n + 1}\n'
        for n in range(5)
    )
    text = (
        BASE
        + (
            '\n[meter_defaults]\nprofile = "sdm120"\ntariff = "flat"\noverload_delay = "2 sec"\n'
            'tarif = "flat"\nid = "X"\n'
        )
        + meters
    )
    assert problems(text) == [
        f"park.toml:{line_of(text, '2 sec')}: meter_defaults.overload_delay: expected a duration "
        'like "500ms", "2s", "5m" or "1h" (units: ms, s, m, h), got "2 sec"',
        f"park.toml:{line_of(text, 'tarif =')}: meter_defaults.tarif: unknown key "
        '(did you mean "tariff"?)',
        f"park.toml:{line_of(text, 'id = ' + chr(34) + 'X')}: meter_defaults.id: "
        "every meter needs its own id; it cannot have a default",
    ]


def test_identical_meters_share_one_policy() -> None:
    config = load(BASE)
    assert config.policies["M-1"] is not config.policies["M-2"]  # tariffs differ
    # Same tariff and profile (the profile's limits are policy too).
    same = replace(replace(BASE, 'tariff = "tou"', 'tariff = "flat"'),
                   'profile = "sdm120"', 'profile = "sdm630"')
    config = load(same)
    assert config.policies["M-1"] is config.policies["M-2"]
    different = replace(same, "overload_w = 30000", "overload_w = 30001", 2)
    config = load(different)
    assert config.policies["M-1"] is not config.policies["M-2"]
    assert config.policies["M-1"].tariff is config.policies["M-2"].tariff


def test_a_meter_takes_its_profiles_limits_and_may_lower_its_power_bound() -> None:
    config = load(BASE)
    assert config.policies["M-1"].max_power_w == 83_000  # sdm630's [limits]
    assert config.policies["M-2"].max_power_w == 12_500  # sdm120's
    assert config.policies["M-1"].max_register_wh == 9_999_999_900
    lowered = replace(BASE, 'profile = "sdm120"', 'profile = "sdm120"\nmax_power_w = 7000')
    assert load(lowered).policies["M-2"].max_power_w == 7000
    with pytest.raises(ConfigError, match=r"max_power_w: must be > 0 and at most .*12500"):
        load(replace(BASE, 'profile = "sdm120"', 'profile = "sdm120"\nmax_power_w = 90000'))


def test_gateway_defaults_match_the_bus() -> None:
    bus = pytest.importorskip("protocols.modbus.bus")
    BusGateway = bus.BusGateway

    ours = load(BASE).gateways[0]
    theirs = BusGateway("gw1", "127.0.0.1", 5020)
    for field in attrs.fields(BusGateway):
        if hasattr(ours, field.name):
            assert getattr(ours, field.name) == getattr(theirs, field.name), field.name


# --- the locator --------------------------------------------------------------------------


def test_locator_understands_toml_shapes() -> None:
    text = (
        "a.b = 1\n"  # 1
        '"quoted.key" = 2\n'  # 2
        's = """\n[not_a_table]\nx = 1\n"""\n'  # 3-6
        "[t]\n"  # 7
        "arr = [\n"  # 8
        "  { k = 1 },\n"  # 9
        "  [1, 2],\n"  # 10
        "]\n"  # 11
        "[[p]]\n"  # 12
        "[[p]]\n"  # 13
        "[p.q]\n"  # 14
        "r = 'x' # comment [[p]]\n"  # 15
        "[[p.s]]\n"  # 16
    )
    lines = locate_keys(text)
    assert lines[("a", "b")] == 1
    assert lines[("quoted.key",)] == 2
    assert ("not_a_table",) not in lines
    assert lines[("t", "arr", 0, "k")] == 9
    assert lines[("t", "arr", 1, 1)] == 10
    assert lines[("p", 0)] == 12
    assert lines[("p", 1)] == 13
    assert lines[("p", 1, "q", "r")] == 15
    assert lines[("p", 1, "s", 0)] == 16


@given(st.text(alphabet="[]{}\"'=,.#\n abc123", max_size=200))
def test_locator_never_raises_or_hangs(text: str) -> None:
    locate_keys(text)


# --- scale --------------------------------------------------------------------------------


def generated_park(meters: int, gateways: int = 50) -> str:
    head = BASE.split("[[gateways]]")[0]
    parts = [
        head,
        '[meter_defaults]\nprofile = "sdm120"\ntariff = "tou"\n'
        'alarm_levels = ["50.00", "20.00"]\nopening_balance = "100.00"\n',
    ]
    parts += [
        f'\n[[gateways]]\nid = "gw{g}"\nhost = "10.0.{g // 250}.{g % 250 + 1}"\nport = 502\n'
        for g in range(gateways)
    ]
    per_gateway = meters // gateways
    parts += [
        f'\n[[meters]]\nid = "M-{n:06d}"\ntenant = "tenant-{n % 997}"\n'
        f'gateway = "gw{n // per_gateway}"\n'
        f"unit = {n % per_gateway + 1}\noverload_w = {7000 if n % 2 else 9000}\n"
        for n in range(meters)
    ]
    return "".join(parts)


def test_ten_thousand_meters_load_quickly_and_share_policies() -> None:
    text = generated_park(10_000)
    started = time.perf_counter()
    config = load(text)
    elapsed = time.perf_counter() - started
    print(f"10,000 meters loaded in {elapsed:.2f} s")
    assert len(config.meters) == 10_000
    assert len({id(p) for p in config.policies.values()}) == 2
    assert elapsed < 5.0


def test_errors_in_a_big_park_are_still_located() -> None:
    text = replace(generated_park(2_000), 'gateway = "gw3"', 'gateway = "gw999"', 27)
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(f"park.toml:{line_of(text, 'gw999')}: meters[146].gateway: ")


# --- profile files -------------------------------------------------------------------------

GAS = """\
name = "gas-g4"
kind = "gas"

[values.import_energy]
address = 0
unit = "m3"
"""


def with_profiles(tmp_path: Path, files: dict[str, str], listed: str) -> str:
    """BASE with ``profile_files = listed`` on line 1; ``files`` written under ``tmp_path``."""
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    return f"profile_files = {listed}\n" + BASE


def test_a_profile_file_adds_a_profile_meters_can_name(tmp_path: Path) -> None:
    text = with_profiles(tmp_path, {"profiles/acme.toml": ACME_PM100}, '["profiles/acme.toml"]')
    text = replace(text, 'profile = "sdm120"', 'profile = "acme-pm100"')
    config = load(text, base_dir=tmp_path)  # relative to the config's directory
    assert config.profile_files == (tmp_path / "profiles/acme.toml",)
    acme = config.profile("acme-pm100")
    assert acme.relay.function_read == 2 and acme.read_plan[0].function == 3
    assert {"sdm630", "sdm120", "water", "acme-pm100"} <= set(config.profiles)
    assert config.meters[1].profile == "acme-pm100" and config.meters[1].kind == "electricity"


def test_load_config_resolves_profile_files_next_to_the_config(tmp_path: Path) -> None:
    text = with_profiles(
        tmp_path, {"site/profiles/acme.toml": ACME_PM100}, '["profiles/acme.toml"]'
    )
    (tmp_path / "site" / "park.toml").write_text(text)
    config = load_config(tmp_path / "site" / "park.toml")
    assert config.profile("acme-pm100").name == "acme-pm100"


def test_a_missing_profile_file_is_named(tmp_path: Path) -> None:
    text = with_profiles(tmp_path, {}, '["profiles/nope.toml"]')
    assert single_problem(text, base_dir=tmp_path) == (
        f"park.toml:1: profile_files[0]: {tmp_path / 'profiles/nope.toml'}: "
        "cannot read profile: No such file or directory"
    )


def test_a_broken_profile_file_is_named_with_its_key(tmp_path: Path) -> None:
    broken = ACME_PM100.replace('unit = "W"', 'unit = "W"\nscael = 0.1')
    text = with_profiles(tmp_path, {"acme.toml": broken}, '["acme.toml"]')
    # A meter naming the broken profile is not "unknown" on top: the file is the problem.
    text = replace(text, 'profile = "sdm120"', 'profile = "acme-pm100"')
    # Both lines: the park's that names the file, and the file's own (the profile loader reads
    # with the same toolkit as the park).
    assert single_problem(text, base_dir=tmp_path) == (
        f"park.toml:1: profile_files[0]: {tmp_path / 'acme.toml'}:{line_of(broken, 'scael')}: "
        'values.total_power.scael: unknown key (did you mean "scale"?)'
    )


def test_every_problem_in_a_profile_file_is_reported(tmp_path: Path) -> None:
    broken = ACME_PM100.replace('unit = "W"', 'unit = "W"\nscael = 0.1').replace(
        'name = "acme-pm100"', 'name = "acme-pm100"\ndescripton = "PM100"'
    )
    files = {"profiles/acme.toml": broken}
    text = with_profiles(tmp_path, files, '[\n  "profiles/acme.toml",\n]')
    path = tmp_path / "profiles/acme.toml"
    assert problems(text, base_dir=tmp_path) == [
        f"park.toml:2: profile_files[0]: {path}:{line_of(broken, 'descripton')}: descripton: "
        'unknown key (did you mean "description"?)',
        f"{path}:{line_of(broken, 'scael')}: values.total_power.scael: unknown key "
        '(did you mean "scale"?)',
    ]


def test_a_profile_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    text = with_profiles(tmp_path, {"acme.toml": "name = acme-pm100\n"}, '["acme.toml"]')
    text = replace(text, 'profile = "sdm120"', 'profile = "acme-pm100"')
    (problem,) = problems(text, base_dir=tmp_path)
    assert problem.startswith(
        f"park.toml:1: profile_files[0]: {tmp_path / 'acme.toml'}: not valid TOML: "
    )


def test_a_profile_file_may_not_take_a_shipped_name(tmp_path: Path) -> None:
    mine = ACME_PM100.replace('name = "acme-pm100"', 'name = "sdm630"')
    text = with_profiles(tmp_path, {"mine.toml": mine}, '["mine.toml"]')
    assert single_problem(text, base_dir=tmp_path) == (
        'park.toml:1: profile_files[0]: "mine.toml": profile name "sdm630" is a shipped '
        "profile's; give the file's profile a name of its own"
    )


def test_two_profile_files_may_not_share_a_name(tmp_path: Path) -> None:
    files = {"a/acme.toml": ACME_PM100, "b/acme.toml": ACME_PM100}
    text = with_profiles(tmp_path, files, '[\n  "a/acme.toml",\n  "b/acme.toml",\n]')
    assert single_problem(text, base_dir=tmp_path) == (
        'park.toml:3: profile_files[1]: "b/acme.toml": profile name "acme-pm100" is already '
        'used by "a/acme.toml" (first at line 2)'
    )


def test_profile_files_must_be_an_array_of_paths(tmp_path: Path) -> None:
    text = with_profiles(tmp_path, {}, '"acme.toml"')
    assert single_problem(text) == (
        'park.toml:1: profile_files: expected an array of file paths like '
        '["profiles/acme-pm100.toml"], got a string "acme.toml"'
    )
    text = with_profiles(tmp_path, {}, "[1]")
    assert single_problem(text) == (
        "park.toml:1: profile_files[0]: expected a file path, got an integer 1"
    )


def test_a_meter_kind_must_match_its_profile() -> None:
    text = replace(BASE, 'profile = "sdm120"', 'profile = "sdm120"\nkind = "water"')
    line = line_of(text, 'kind = "water"')
    assert single_problem(text) == (
        f'park.toml:{line}: meters[1].kind: meter "M-2": '
        'kind "water" does not match profile "sdm120", which is "electricity"'
    )
    ok = replace(BASE, 'profile = "sdm120"', 'profile = "water"\nkind = "water"')
    assert load(ok).meters[1].kind == "water"


def test_a_meter_kind_is_its_profiles_when_left_out(tmp_path: Path) -> None:
    text = with_profiles(tmp_path, {"gas.toml": GAS}, '["gas.toml"]')
    text = replace(text, 'profile = "sdm120"', 'profile = "gas-g4"')
    text = replace(text, 'profile = "sdm630"', 'profile = "water"')
    config = load(text, base_dir=tmp_path)
    assert [m.kind for m in config.meters] == ["water", "gas"]


def test_a_default_kind_and_default_profile_that_disagree_are_reported_once() -> None:
    text = BASE.replace('profile = "sdm630"\n', "").replace('profile = "sdm120"\n', "")
    defaults = '[meter_defaults]\nprofile = "sdm630"\nkind = "gas"\n\n[[meters]]'
    text = text.replace("[[meters]]", defaults, 1)
    line = line_of(text, 'kind = "gas"')
    assert single_problem(text) == (
        f"park.toml:{line}: meter_defaults.kind: "
        'kind "gas" does not match profile "sdm630", which is "electricity"'
    )


def test_a_default_kind_against_a_meters_own_profile_names_the_meter() -> None:
    text = BASE.replace("[[meters]]", '[meter_defaults]\nkind = "water"\n\n[[meters]]', 1)
    text = replace(text, 'profile = "sdm630"', 'profile = "water"')
    line = line_of(text, 'kind = "water"')
    assert problems(text) == [
        f'park.toml:{line}: meter_defaults.kind: meter "M-2": '
        'kind "water" does not match profile "sdm120", which is "electricity"'
    ]


WATER_TIERS = (
    '\n[tariffs.water]\nkind = "tiered"\ntiers = [\n'
    '  { up_to_m3 = "10", price = "3.00" },\n'
    '  { up_to_m3 = "20.5", price = "4.50" },\n'
    '  { price = "6.00" },\n]\n'
)


def water_meter_on(text: str, tariff: str) -> str:
    """BASE's second meter as a water meter on ``tariff``."""
    text = replace(text, 'profile = "sdm120"', 'profile = "water"')
    return replace(text, 'tariff = "tou"', f'tariff = "{tariff}"')


def test_a_tiered_water_tariff_counts_m3_as_litres() -> None:
    config = load(water_meter_on(BASE + WATER_TIERS, "water"))
    tariff = config.tariffs["water"]
    assert tariff.unit == "m3"
    assert tariff.tiers == (
        Tier(10_000, parse_price("3.00")),
        Tier(20_500, parse_price("4.50")),
        Tier(None, parse_price("6.00")),
    )
    assert config.meters[1].kind == "water" and config.meters[1].tariff == "water"
    assert config.tariffs["flat"].unit == ""  # no caps, no unit: any meter's
    assert config.tariffs["tou"].unit == ""


def test_a_meter_on_another_utilitys_tariff_is_refused() -> None:
    text = replace(BASE + WATER_TIERS, 'tariff = "flat"', 'tariff = "water"')
    line = line_of(text, 'tariff = "water"')
    assert single_problem(text) == (
        f'park.toml:{line}: meters[0].tariff: meter "M-1": tariff "water" is priced per m3, '
        "but this electricity meter is charged per kWh (give it a tariff with up_to_kwh "
        'tiers or unit = "kWh", or one with neither)'
    )
    kwh_tiers = '\n[tariffs.dorm]\nkind = "tiered"\ntiers = [{ up_to_kwh = "200", price = ' \
        '"0.50" }, { price = "0.80" }]\n'
    text = water_meter_on(BASE + kwh_tiers, "dorm")
    line = line_of(text, 'tariff = "dorm"')
    assert single_problem(text) == (
        f'park.toml:{line}: meters[1].tariff: meter "M-2": tariff "dorm" is priced per kWh, '
        "but this water meter is charged per m3 (give it a tariff with up_to_m3 tiers or "
        'unit = "m3", or one with neither)'
    )
    # A flat price declared per m3 is the water meters' too, and refused to the others.
    per_m3 = '\n[tariffs.w]\nkind = "flat"\nunit = "m3"\nprice = "3.20"\n'
    assert load(water_meter_on(BASE + per_m3, "w")).tariffs["w"].unit == "m3"
    text = replace(BASE + per_m3, 'tariff = "flat"', 'tariff = "w"')
    assert 'meters[0].tariff: meter "M-1": tariff "w" is priced per m3' in single_problem(text)


def test_a_tariffs_tier_caps_share_one_unit() -> None:
    mixed = replace(WATER_TIERS, 'up_to_m3 = "20.5"', 'up_to_kwh = "20.5"')
    text = BASE + mixed
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'up_to_kwh')}: tariffs.water.tiers[1].up_to_kwh: "
        "this tariff counts m3 (the first cap is up_to_m3): write up_to_m3"
    )
    declared = replace(BASE + WATER_TIERS, 'kind = "tiered"', 'kind = "tiered"\nunit = "kWh"')
    found = problems(declared)
    assert found[0] == (
        f"park.toml:{line_of(declared, 'up_to_m3')}: tariffs.water.tiers[0].up_to_m3: "
        'this tariff counts kWh (unit = "kWh"): write up_to_kwh'
    )
    both = replace(WATER_TIERS, 'up_to_m3 = "10",', 'up_to_m3 = "10", up_to_kwh = "10",')
    assert "a tier has one cap: up_to_kwh or up_to_m3, not both" in problems(BASE + both)[0]
    uncapped = replace(WATER_TIERS, '{ up_to_m3 = "10", ', "{ ")
    assert "tariffs.water.tiers[0].up_to_m3: every tier but the last needs up_to_m3" in \
        problems(replace(BASE + uncapped, 'kind = "tiered"', 'kind = "tiered"\nunit = "m3"'))[0]
    litres = replace(WATER_TIERS, '"20.5"', '"20.0005"')
    assert "expected a positive volume in whole litres" in problems(BASE + litres)[0]


def test_serve_refuses_a_broken_profile_file_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import EXIT_FAILURE, main

    path = tmp_path / "park.toml"
    path.write_text(with_profiles(tmp_path, {}, '["profiles/acme.toml"]'))
    assert main(["serve", "--config", str(path)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert f"profile_files[0]: {tmp_path / 'profiles/acme.toml'}: cannot read profile" in err
    assert "Traceback" not in err
    assert not (tmp_path / "var").exists()  # refused before anything started


# --- documentation ------------------------------------------------------------------------


def test_every_key_the_reader_accepts_is_documented() -> None:
    source = "".join((REPO / "server" / "config" / name).read_text()
                     for name in ("reader.py", "shared_costs.py", "tenants.py"))
    accessors = r"(?:string|name|integer|number|boolean|duration_ms|amount|amounts|price|minute|"
    accessors += r"table|tables|raw|has|read_month_day\(t,|decimal_units\(t,|"
    accessors += r"meter_list\(t,)"
    keys = set(re.findall(rf"{accessors}\(?\s*\"([a-z_0-9]+)\"", source))
    assert {"overload_delay", "poll_interval", "up_to_kwh", "from", "weekend", "budget_kwh",
            "loss_window", "area_m2", "shares"} <= keys
    docs = (REPO / "docs" / "configuration.md").read_text()
    # Documented = named in code spans: `key`, `[key]`, `[[key]]`, `hub.listen`, `a`, `b`.
    prose = re.sub(r"```.*?```", "", docs, flags=re.DOTALL)  # code blocks pair backticks oddly
    spans = " ".join(re.findall(r"`([^`]+)`", prose))
    undocumented = sorted(key for key in keys if not re.search(rf"(?<![\w-]){key}(?![\w-])", spans))
    assert not undocumented


def test_the_field_passes_every_gateway_key_to_the_bus() -> None:
    from server.field import bus_gateway

    text = replace(BASE, "port = 5020", "port = 5020\nwindow = 8\ncommand_slots = 3\nspread = true")
    section = load(text).gateways[0]
    bus = bus_gateway(section)
    for field in attrs.fields(type(section)):
        name = {"id": "gateway_id"}.get(field.name, field.name)
        assert getattr(bus, name) == getattr(section, field.name), field.name


def test_a_history_interval_must_not_straddle_a_band() -> None:
    text = BASE.replace('  { name = "valley", start = "00:00", end = "08:00", price = "0.40" },\n'
                        '  { name = "flat",   start = "08:00",',
                        '  { name = "valley", start = "00:00", end = "07:30", price = "0.40" },\n'
                        '  { name = "flat",   start = "07:30",')
    assert load(text).meters[1].policy.interval_ms == 15 * 60_000  # 15 minutes divide 07:30
    hourly = text.replace('tariff = "tou"\n', 'tariff = "tou"\ninterval = "1h"\n')
    line = line_of(hourly, 'interval = "1h"')
    assert single_problem(hourly) == (
        f"park.toml:{line}: meters[1].interval: a history interval must lie inside one tariff "
        f"band, but band 'valley' of tariff tou (bands) starts or ends at 07:30, which is not "
        f"on a 60-minute step; choose an interval that divides it (e.g. 15m)"
    )


def test_a_history_interval_must_fit_the_time_zone() -> None:
    text = BASE.replace('currency = "CNY"\n', 'currency = "INR"\ntimezone = "Asia/Kolkata"\n')
    assert load(text).meters[1].policy.interval_ms == 15 * 60_000
    hourly = text.replace('tariff = "tou"\n', 'tariff = "tou"\ninterval = "1h"\n')
    assert "the time zone Asia/Kolkata of tariff tou is UTC+05:30, which is not a whole " \
           "number of 60-minute steps" in single_problem(hourly)


# --- what storage can keep ----------------------------------------------------------------


def test_a_meter_id_storage_cannot_keep_is_refused_at_its_line() -> None:
    too_long = replace(BASE, 'id = "M-2"', f'id = "{"M" * 600}"')
    assert single_problem(too_long) == (
        f"park.toml:{line_of(too_long, 'MMMM')}: meters[1].id: a meter id must be at most 128 "
        f'bytes of UTF-8; this one has 600: "{"M" * 60}...(600 characters)"'
    )
    with_nul = replace(BASE, 'id = "M-2"', 'id = "M\\u00002"')
    assert single_problem(with_nul) == (
        f"park.toml:{line_of(with_nul, 'u0000')}: meters[1].id: a meter id must not contain "
        'control characters (NUL, tab, newline), got "M\\x002"'
    )


def test_the_id_limit_is_in_bytes_of_utf8() -> None:
    # 42 CJK characters are 126 bytes; 43 are 129.
    assert load(replace(BASE, 'id = "M-2"', f'id = "{"电" * 42}"')).meters[1].id == "电" * 42
    assert "this one has 129" in single_problem(replace(BASE, 'id = "M-2"', f'id = "{"电" * 43}"'))


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ('tenant = "beta"', 'tenant = " beta"', "meters[1].tenant",
         'a tenant must not start or end with whitespace, got " beta"'),
        ('tenant = "beta"', 'tenant = "be\\nta"', "meters[1].tenant",
         'a tenant must not contain control characters (NUL, tab, newline), got "be\\nta"'),
        ('tenant = "beta"', f'tenant = "{"t" * 129}"', "meters[1].tenant",
         "a tenant must be at most 128 bytes of UTF-8; this one has 129"),
        ('id = "gw2"', 'id = "gw\\u00002"', "gateways[1].id",
         "a gateway id must not contain control characters"),
        ('name = "op"', 'name = "o\\u007fp"', "users[0].name",
         "a user name must not contain control characters"),
        ('name = "valley"', 'name = "val\\u0000ley"', "tariffs.tou.bands[0].name",
         "a band name must not contain control characters"),
    ],
)
def test_other_ids_storage_cannot_keep_are_refused(
    old: str, new: str, path: str, message: str
) -> None:
    text = replace(BASE, old, new)
    found = single_problem(text)
    assert found.startswith(f"park.toml:{line_of(text, new)}: {path}: {message}"), found


def test_a_tariff_name_storage_cannot_keep_is_refused_at_its_table() -> None:
    text = BASE + '\n[tariffs."night\\u0000rate"]\nkind = "flat"\nprice = "0.30"\n'
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'night')}: tariffs.\"night\\x00rate\": a tariff name must "
        'not contain control characters (NUL, tab, newline), got "night\\x00rate"'
    )


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, every character escaped that must or might be."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char.isascii():
            out.append(char)
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


@given(st.text(max_size=200))
def test_every_meter_id_the_config_accepts_is_a_storage_key(meter_id: str) -> None:
    from persistence.keys import check_meter_id, meter_key, split_meter_key

    text = replace(BASE, 'id = "M-2"', f"id = {toml_string(meter_id)}")
    try:
        config = load(text)
    except ConfigError:
        return
    assert config.meters[1].id == meter_id
    check_meter_id(meter_id)  # what the journal and the snapshots check: it must not raise
    assert split_meter_key(meter_key(meter_id, 7)) == (meter_id, 7)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('opening_balance = "100.00"', 'opening_balance = "10000000000.01"',
         'meters[0].opening_balance: must be at most 10000000000.00, got "10000000000.01"'),
        ('alarm_levels = ["50.00", "20.00"]', 'alarm_levels = ["99999999999999.00", "20.00"]',
         "meters[0].alarm_levels: alarm_levels[0] must be at most 10000000000.00"),
        ('overload_w = 30000', 'overload_w = 30000\nemergency_credit = "1e20"',
         "meters[0].emergency_credit: amount must be written without an exponent"),
        ('price = "1.00"', 'price = "1000000.00001"',
         'tariffs.flat.price: a price must be at most 1000000 per kWh, got "1000000.00001"'),
    ],
)
def test_amounts_and_prices_beyond_what_the_journal_holds_are_refused(
    old: str, new: str, message: str
) -> None:
    text = replace(BASE, old, new)
    found = single_problem(text)
    assert found.startswith(f"park.toml:{line_of(text, new.splitlines()[-1])}: {message}"), found


def test_the_highest_amount_and_price_are_accepted() -> None:
    text = replace(BASE, 'opening_balance = "100.00"', 'opening_balance = "10000000000.00"')
    text = replace(text, 'price = "1.00"', 'price = "1000000.00"')
    config = load(text)
    assert config.meters[0].opening_balance == 10**12
    # At the highest price, a whole 32-bit Wh register costs far less than int64 holds.
    price = config.tariffs["flat"].bands[0].price
    assert (2**32 * price) // 1_000_000 < 2**63 // 10_000


def test_a_tier_cap_beyond_the_limit_is_refused() -> None:
    text = BASE + (
        '\n[tariffs.block]\nkind = "tiered"\n'
        '[[tariffs.block.tiers]]\nup_to_kwh = "1000000001"\nprice = "0.50"\n'
        '[[tariffs.block.tiers]]\nprice = "0.80"\n'
    )
    assert single_problem(text) == (
        f"park.toml:{line_of(text, 'up_to_kwh')}: tariffs.block.tiers[0].up_to_kwh: a tier cap "
        'must be at most 1000000000 kWh, got "1000000001"'
    )


def test_a_deeply_nested_config_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    deep = BASE + "\nnested = " + "[" * 40 + "]" * 40 + "\n"
    assert single_problem(deep) == (
        f"park.toml:{line_of(deep, 'nested')}: arrays or inline tables nested more than 32 "
        "levels deep (a park config or profile needs at most three)"
    )
    # Strings full of closing brackets hide the nesting from the quick check; what tomllib
    # cannot parse (RecursionError) is still located.
    hidden = BASE + "\nnested = " + '[ "]", ' * 5000 + "]" * 5000 + "\n"
    (tmp_path / "park.toml").write_text(hidden)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "park.toml")
    assert str(caught.value) == (
        f"{tmp_path / 'park.toml'}:{line_of(hidden, 'nested')}: arrays or inline tables nested "
        "more than 32 levels deep (a park config or profile needs at most three)"
    )


def test_nesting_up_to_the_limit_is_fine() -> None:
    from protocols.toml.limits import MAX_NESTING, nesting_line, parse_toml

    text = "x = " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\n"
    value, depth = parse_toml(text)["x"], 1
    while value:
        value, depth = value[0], depth + 1
    assert depth == MAX_NESTING
    assert nesting_line(text) is None
    # Brackets in strings and comments are not nesting; table headers are not nesting.
    text = 'a = "' + "[" * 100 + '"  # ' + "{" * 100 + "\n[[b]]\n[c.d]\n"
    assert nesting_line(text) is None
    assert parse_toml(text)["a"] == "[" * 100


def test_a_config_file_above_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    from server.config import MAX_CONFIG_BYTES

    big = tmp_path / "park.toml"
    with big.open("wb") as file:  # sparse: nothing is written, nothing is read
        file.truncate(MAX_CONFIG_BYTES + 1)
    with pytest.raises(ConfigError) as caught:
        load_config(big)
    assert str(caught.value) == (
        f"{big}: the file is 64.0 MiB, more than the 64 MiB a park config may have "
        "(split the park: one server per group of gateways)"
    )


def test_a_deep_or_huge_profile_file_is_a_profile_error_naming_it(tmp_path: Path) -> None:
    from protocols.modbus.profiles import MAX_PROFILE_FILE_BYTES

    deep = ACME_PM100 + "\nnested = " + "{a = " * 50 + "1" + "}" * 50 + "\n"
    huge = tmp_path / "huge.toml"
    with huge.open("wb") as file:
        file.truncate(MAX_PROFILE_FILE_BYTES + 1)
    text = with_profiles(tmp_path, {"deep.toml": deep}, '["deep.toml", "huge.toml"]')
    found = problems(text, base_dir=tmp_path)
    assert found == [
        f"park.toml:1: profile_files[0]: {tmp_path / 'deep.toml'}:{line_of(deep, 'nested')}: "
        "arrays or inline tables nested more than 32 levels deep (a park config or profile "
        "needs at most three)",
        f"park.toml:1: profile_files[1]: {huge}: the file is 1,048,577 bytes, more than the "
        "1,048,576 a profile may have (is it a profile?)",
    ]


# --- RTU over TCP -------------------------------------------------------------------------


def test_an_rtu_over_tcp_gateway_reaches_the_bus() -> None:
    from server.field import bus_gateway

    text = replace(BASE, "port = 5020", 'port = 5020\ntransport = "rtu-over-tcp"')
    section = load(text).gateways[0]
    assert (section.transport, section.window, section.command_slots) == ("rtu-over-tcp", 1, 0)
    assert bus_gateway(section).transport == "rtu-over-tcp"


def test_an_rtu_over_tcp_gateway_refuses_a_window_and_command_slots() -> None:
    text = replace(BASE, "port = 5020",
                   'port = 5020\ntransport = "rtu-over-tcp"\nwindow = 4\ncommand_slots = 1')
    assert problems(text) == [
        f"park.toml:{line_of(text, 'window = 4')}: gateways[0].window: must be 1 on an "
        "rtu-over-tcp gateway: RTU frames carry no transaction id, so one request is on the "
        "wire at a time",
        f"park.toml:{line_of(text, 'command_slots')}: gateways[0].command_slots: must be 0 on "
        "an rtu-over-tcp gateway: one request is on the wire at a time, relay writes included",
    ]
    unknown = replace(BASE, "port = 5020", 'port = 5020\ntransport = "rtu"')
    assert single_problem(unknown).endswith(
        'gateways[0].transport: must be one of tcp, rtu-over-tcp; got "rtu"'
    )


SHARED = BASE + """
[[meters]]
id = "MAIN"
tenant = "park"
gateway = "gw2"
unit = 1
profile = "sdm630"
tariff = "flat"
"""


@pytest.mark.parametrize(("extra", "fragment", "words"), [
    ('[[quotas]]\nid = "q"\nmeters = ["M-1", "M-9"]\nbudget_kwh = "10"\n',
     'meters = ["M-1", "M-9"]', 'unknown meter "M-9"'),
    ('[[quotas]]\nid = "q"\nmeters = ["M-1"]\nbudget_kwh = "10"\n'
     '[[quotas]]\nid = "r"\nmeters = ["M-1"]\nbudget = "5.00"\n',
     'meters = ["M-1"]', 'is in quota group "q" already'),
    ('[[quotas]]\nid = "q"\nmeters = ["M-1"]\nbudget_kwh = "1.2345"\n',
     'budget_kwh', "more than 3 decimal places"),
    ('[[quotas]]\nid = "q"\nmeters = ["M-1"]\n', "[[quotas]]", "give one budget"),
    ('[[feeders]]\nid = "a"\nmain = "MAIN"\nmeters = ["M-1"]\n'
     '[[feeders]]\nid = "b"\nmain = "M-1"\nmeters = ["MAIN"]\n',
     'main = "MAIN"', "feeders must form a tree"),
    ('[[feeders]]\nid = "a"\nmain = "MAIN"\nmeters = ["MAIN", "M-1"]\n',
     'meters = ["MAIN", "M-1"]', "cannot be under its own feeder"),
    ('[[pools]]\nid = "p"\nkind = "loss"\nfeeder = "tx9"\n', 'feeder = "tx9"',
     'unknown feeder "tx9"'),
    ('[[pools]]\nid = "p"\nkind = "common"\nmeters = ["MAIN"]\nbasis = "area"\n',
     'basis = "area"', "needs every sharing tenant's area_m2"),
    ('[[pools]]\nid = "p"\nkind = "common"\nmeters = ["MAIN"]\nbasis = "fixed"\n'
     'shares = { acme = "60" }\n', 'shares = { acme = "60" }',
     'tenant "beta" shares this pool but has no share'),
    ('[[pools]]\nid = "p"\nkind = "common"\nmeters = ["MAIN"]\n'
     '[[pools]]\nid = "p"\nkind = "common"\nmeters = ["MAIN"]\n',
     'id = "p"', 'duplicate pool id "p"'),
    ('[tenants.gamma]\nname = "Gamma"\n', "[tenants.gamma]", 'no meter has tenant "gamma"'),
    ('[[lines]]\nid = "press"\nmeters = ["M-1"]\noutput_unit = ""\n', 'output_unit',
     "a short name of what the line makes"),
])
def test_shared_cost_sections_refuse_what_cannot_be_true(extra: str, fragment: str,
                                                         words: str) -> None:
    text = SHARED + extra
    found = problems(text)
    assert any(words in problem for problem in found), found
    line = next(problem for problem in found if words in problem).split(":")[1]
    occurrence = 2 if "already" in words or "duplicate" in words or "tree" in words else 1
    assert int(line) == line_of(text, fragment, occurrence if text.count(fragment) > 1 else 1)
