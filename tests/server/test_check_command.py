"""``wattkeeper check --config PARK.toml``, run as a user runs it (a process of its own)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from persistence.check import CHECKED
from persistence.keys import pack_u64
from persistence.store import DataDirInUse, Store, open_store
from policies.records import MeterState, Reading
from server.app import open_park
from tests.persistence.damaged import NOT_MSGPACK, damaged_snapshots, poke, poke_entry
from tests.server.parks import park_toml, small_park

REPO = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000_000


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "check", "--config", str(config)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        capture_output=True, timeout=60,
    )


def write_config(tmp_path: Path, meters: int = 3) -> Path:
    path = tmp_path / "park.toml"
    path.write_text(park_toml(tmp_path / "data", meters))
    return path


async def make_park(tmp_path: Path, meters: int = 3) -> Path:
    """A data directory with journal entries, outcomes, indexes, snapshots and history."""
    config = write_config(tmp_path, meters)
    async with open_park(small_park(tmp_path / "data", meters), with_field=False) as park:
        for n, actor in enumerate(park.registry):
            park.registry.deliver_reading_nowait(actor.key, Reading(T0, 1_000, 10.0))
            await park.ledger.top_up(actor.meter_id, 1_00 + n, f"pay-{n}", T0)
        while park.journal.statistics().index_lag:  # let the writer index, as it does when idle
            await trio.sleep(0.01)
    return config


async def test_a_clean_directory_exits_0_with_its_counts(tmp_path: Path) -> None:
    config = await make_park(tmp_path)
    before = hashlib.sha256((tmp_path / "data" / "data.mdb").read_bytes()).hexdigest()
    result = check(config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"data directory {tmp_path / 'data'} (schema 2)"
    assert lines[1].split() == ["journal", "3", "last", "seq", "3,", "indexed", "through", "seq",
                                "3", "(0", "in", "the", "tail)"]
    assert lines[-1] == "OK: every record is readable and the indexes agree with the journal"
    assert result.stderr == ""
    assert hashlib.sha256((tmp_path / "data" / "data.mdb").read_bytes()).hexdigest() == before


async def test_each_kind_of_damage_exits_1_naming_the_key(tmp_path: Path) -> None:
    config = await make_park(tmp_path)
    data = tmp_path / "data"
    damages = [
        ("snapshots", b"M-1", damaged_snapshots(MeterState(balance=1))["a string balance"],
         'snapshots["M-1"]: not a usable meter state: balance is \'100.00\', not a 64-bit '
         "integer"),
        ("journal", pack_u64(2), NOT_MSGPACK,
         "journal[seq 2]: not a journal entry: FormatError (meter M-1)"),
        ("outcomes", pack_u64(1), b"\xa3abc", 'outcomes[seq 1]: not a stored outcome: \'abc\''),
        ("refs", b"pay-0", pack_u64(3),
         'refs["pay-0"]: points at journal entry seq 3, but journal entry seq 1 has this '
         "reference too (one reference, two money events)"),
    ]
    for database, key, value, expected in damages:
        with open_store(data) as store:
            saved = _get(store, database, key)
            poke(store, database, key, value)
        result = check(config)
        assert result.returncode == 1, (database, result.stdout, result.stderr)
        assert f"  {expected}" in result.stdout.splitlines(), result.stdout
        assert result.stdout.splitlines()[-1].startswith("NOT OK: ")
        with open_store(data) as store:  # repaired for the next kind
            poke(store, database, key, saved)
    assert check(config).returncode == 0


def _get(store: Store, database: str, key: bytes) -> bytes:
    with store.read() as txn:
        value = txn.get(key, db=getattr(store, database))
    assert value is not None
    return bytes(value)


async def test_a_snapshot_of_a_meter_not_configured_is_a_note(tmp_path: Path) -> None:
    await make_park(tmp_path, meters=3)
    config = write_config(tmp_path, meters=2)  # M-2 left the park
    result = check(config)
    assert result.returncode == 0, result.stdout
    assert "1 note:" in result.stdout
    assert 'snapshots["M-2"]: a snapshot of a meter that is not in the config' in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = check(tmp_path / "nope.toml")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("wattkeeper check: ") and "nope.toml" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\ndata_dir = 3\n")
    result = check(bad)
    assert result.returncode == 2 and "data_dir" in result.stderr
    no_args = subprocess.run([sys.executable, "-m", "server.cli", "check"], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                             capture_output=True, timeout=60)
    assert no_args.returncode == 2 and "--config" in no_args.stderr


def test_a_missing_data_directory_exits_1_in_words(tmp_path: Path) -> None:
    result = check(write_config(tmp_path))
    assert result.returncode == 1
    assert result.stderr == (f"wattkeeper check: there is no wattkeeper data directory at "
                             f"{tmp_path / 'data'} (no data.mdb); check data_dir in the park "
                             f"config\n")
    assert not (tmp_path / "data").exists()  # not created


async def test_check_runs_beside_a_running_park_without_disturbing_it(tmp_path: Path) -> None:
    config = await make_park(tmp_path)
    with open_store(tmp_path / "data") as store:
        poke_entry(store, 3, NOT_MSGPACK)  # M-2's; the park below quarantines it
    async with open_park(small_park(tmp_path / "data"), with_field=False) as park:
        assert park.supervisor.faulted_meters == {"M-2"}
        lock = (tmp_path / "data" / "wattkeeper.lock").read_text()
        for round_ in range(3):
            # The check runs in its own process while this one keeps taking money.
            result = await trio.to_thread.run_sync(check, config)
            ack = await park.ledger.top_up("M-0", 1_00, f"meanwhile-{round_}", T0)
            assert ack.balance == 100_00 + 1_00 * (round_ + 2)
            assert result.returncode == 1, result.stderr
            assert "  journal[seq 3]: not a journal entry: FormatError (meter M-2)" in (
                result.stdout.splitlines())
        assert (tmp_path / "data" / "wattkeeper.lock").read_text() == lock
        with pytest.raises(DataDirInUse):  # still ours: never taken or released by the check
            open_store(tmp_path / "data")
        park.registry.deliver_reading_nowait(park.registry.get("M-1").key,
                                             Reading(T0 + 60_000, 2_000, 10.0))
        await park.snapshot_now()
    result = check(config)  # the park's writes meanwhile are all consistent
    assert result.returncode == 1
    assert result.stdout.splitlines()[1 + len(CHECKED):] == [
        "2 problems:",
        "  journal[seq 3]: not a journal entry: FormatError (meter M-2)",
        '  refs["pay-2"]: points at journal entry seq 3, whose reference is unreadable',
        "NOT OK: 2 problems. A meter whose snapshot or journal entry is named above starts "
        "faulted (quarantined) until that record is restored from a backup: see "
        'docs/operations.md, "A corrupt record".',
    ]
    assert result.stdout.splitlines()[1].split()[:2] == ["journal", "6"]
