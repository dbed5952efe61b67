"""Ctrl-C in the terminal stops the server cleanly: no traceback, the journal closed, no orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from persistence.recovery import load_snapshots
from persistence.store import open_store

REPO = Path(__file__).resolve().parents[2]


def test_ctrl_c_stops_the_demo_cleanly_and_leaves_a_reopenable_directory(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "demo", "--meters", "8", "--gateways", "1",
         "--port", "16120", "--data", str(data)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal gives it
    )
    assert demo.stdout is not None
    deadline = time.monotonic() + 30
    banner = []
    for line in demo.stdout:
        banner.append(line)
        if "Press Ctrl-C" in line or time.monotonic() > deadline:
            break
    # The demo says where each service is, the OPC UA server's endpoint and security too.
    [opcua] = [line for line in banner if line.strip().startswith("OPC UA:")]
    assert "opc.tcp://127.0.0.1:4840/wattkeeper/" in opcua and "security none" in opcua
    time.sleep(0.5)
    os.killpg(demo.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
    output, _ = demo.communicate(timeout=30)
    assert demo.returncode == 0, output
    assert "stopped; state is in" in output
    assert "Traceback" not in output and "journal writer stopped" not in output
    with open_store(data / "lmdb") as store:  # not refused: server and writer are gone
        # the final snapshot was written on the way out: 8 tenant meters and the park's own 3
        assert len(load_snapshots(store)) == 8 + 3


def test_sigterm_stops_serve_in_order(tmp_path: Path) -> None:
    """A service manager's stop: SIGTERM closes the park like Ctrl-C does."""
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "park.toml").write_text((REPO / "examples" / "park.toml").read_text())
    serve = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--config", str(config_dir / "park.toml")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert serve.stdout is not None
    for line in serve.stdout:
        if "polling" in line:
            break
    serve.terminate()
    output, _ = serve.communicate(timeout=30)
    assert serve.returncode == 0, output
    assert "SIGTERM: stopping" in output and "Traceback" not in output
    with open_store(tmp_path / "var" / "example-park") as store:
        assert len(load_snapshots(store)) == 8  # the example park's meters, written on the way out
