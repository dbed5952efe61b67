"""Operator commands through ``park.operations``: roles, journal, idempotency, audit."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors.registry import UnknownMeter
from persistence.entries import ReferenceConflict
from server.app import open_park
from server.auth import Caller
from server.ledger import BadRequest
from server.operations import Forbidden
from tests.server.parks import small_park

OPERATOR = Caller("op", "operator", "hub", "127.0.0.1:5000")
VIEWER = Caller("eve", "viewer", "hub", "127.0.0.1:5001")
ADMIN = Caller("root", "admin", "http", "127.0.0.1:5002")
T0 = 1_790_000_000_000


async def test_manual_open_holds_until_auto_and_survives_a_clean_restart(tmp_path: Path) -> None:
    config = small_park(tmp_path / "park")
    async with open_park(config, with_field=False) as park:
        ack = await park.operations.set_relay(OPERATOR, "M-0", "open", "maintenance", "r1")
        assert (ack.status, ack.relay_closed, ack.relay_reason) == ("applied", False, "manual")
        # A top-up does not close a manually opened relay.
        await park.operations.top_up(OPERATOR, "M-0", 10_00, "pay-1")
        assert not park.registry.get("M-0").state.relay.closed
    async with open_park(config, with_field=False) as park:
        relay = park.registry.get("M-0").state.relay
        assert (relay.closed, relay.reason, relay.manual_reason) == (False, "manual",
                                                                      "maintenance")
        ack = await park.operations.set_relay(OPERATOR, "M-0", "auto", "", "r2")
        assert ack.relay_closed and ack.relay_reason is None


def test_commands_survive_a_crash_by_journal_replay(tmp_path: Path) -> None:
    data_dir = tmp_path / "park"
    with subprocess.Popen(
            [sys.executable, "-m", "tests.server.operator_worker", str(data_dir)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]) as worker:
        try:
            assert worker.stdout is not None
            line = worker.stdout.readline().split()
            assert line[:1] == ["READY"], line
            alarm_id = line[1]
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)

    async def check() -> None:
        async with open_park(small_park(data_dir), with_field=False) as park:
            assert park.registry.get("M-0").state.relay.reason == "manual"
            local = alarm_id.rpartition("/")[2]
            (alarm,) = [a for a in park.registry.get("M-1").state.alarms.active
                        if a.alarm_id == local]
            assert alarm.acknowledged
            # The repeat of an acknowledged command is a duplicate, not a second command.
            again = await park.operations.set_relay(OPERATOR, "M-0", "open", "maintenance",
                                                    "cmd-open")
            assert again.status == "duplicate"

    trio.run(check)


async def test_repeat_is_a_duplicate_and_reuse_for_another_command_is_a_conflict(
        tmp_path: Path) -> None:
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        ops = park.operations
        first = await ops.set_relay(OPERATOR, "M-0", "open", "fire drill", "same")
        again = await ops.set_relay(OPERATOR, "M-0", "open", "fire drill", "same")
        assert (first.status, again.status) == ("applied", "duplicate")
        with pytest.raises(ReferenceConflict):
            await ops.set_relay(OPERATOR, "M-0", "auto", "", "same")
        with pytest.raises(ReferenceConflict):
            await ops.top_up(OPERATOR, "M-0", 5_00, "same")


async def test_viewers_are_refused_and_every_outcome_is_audited(tmp_path: Path) -> None:
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        ops = park.operations
        heard = []
        ops.audit_listeners.append(heard.append)
        with pytest.raises(Forbidden):
            await ops.top_up(VIEWER, "M-0", 5_00, "v1")
        with pytest.raises(Forbidden):
            await ops.set_relay(VIEWER, "M-0", "open", "", "v2")
        with pytest.raises(BadRequest):
            await ops.set_relay(OPERATOR, "M-0", "shut", "", "o1")
        with pytest.raises(UnknownMeter):
            await ops.reset_lockout(OPERATOR, "M-404", "o2")
        with pytest.raises(BadRequest):
            await ops.ack_alarm(OPERATOR, "M-0/99", "o3")
        with pytest.raises(BadRequest):
            await ops.ack_alarm(OPERATOR, "not-an-alarm", "o4")
        await ops.reset_lockout(OPERATOR, "M-1", "o5")
        with pytest.raises(Forbidden):
            ops.audit_page(OPERATOR)
        assert park.registry.get("M-0").state.balance == 100_00  # no money moved
        assert park.registry.get("M-0").state.relay.closed

        page = ops.audit_page(ADMIN, limit=5)
        assert [e.reference for e in page.entries] == ["o5", "o4", "o3", "o2", "o1"]
        assert [(e.result, e.code) for e in page.entries] == [
            ("accepted", ""), ("refused", "bad_request"), ("refused", "bad_request"),
            ("refused", "unknown_meter"), ("refused", "bad_request")]
        older = ops.audit_page(ADMIN, before=page.next, limit=5)
        assert [(e.user, e.command, e.result, e.code) for e in older.entries] == [
            ("eve", "relay", "refused", "forbidden"), ("eve", "topup", "refused", "forbidden")]
        assert older.next is None
        assert older.entries[0].address == "127.0.0.1:5001"
        assert len(heard) == 7


async def test_acknowledging_a_park_alarm_is_refused_with_a_reason(tmp_path: Path) -> None:
    async with open_park(small_park(tmp_path / "park"), with_field=False) as park:
        with pytest.raises(BadRequest, match="park alarm"):
            await park.operations.ack_alarm(OPERATOR, "park/storage", "p1")
