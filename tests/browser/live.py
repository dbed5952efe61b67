"""A running park for the browser tests and the screenshots: ``wattkeeper sim`` and
``wattkeeper serve`` as subprocesses on free loopback ports, the hub behind a TCP proxy.

The console learns the hub's address from ``/api/console``; the park's ``[http] hub_url``
points it at :class:`TcpProxy`, which a test can cut (every connection closed, new ones
refused) and resume: a real lost connection, with the server and its sessions still up.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx

REPO = Path(__file__).resolve().parents[2]
LOGINS = {"op": "op-secret", "viewer": "viewer-secret", "admin": "admin-secret"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TcpProxy:
    """Forwards 127.0.0.1:<port> to an upstream port, one thread pair per connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._accepting = threading.Event()
        self._accepting.set()
        self._closed = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Close every connection and refuse new ones until :meth:`resume`."""
        self._accepting.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def resume(self) -> None:
        self._accepting.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._thread.join(timeout=2)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._accepting.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.5)
                if self._closed:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets -= {a, b}


def park_toml(data_dir: Path, *, meters: int, gateways: int, gateway_port: int,
              hub_port: int, http_port: int, hub_url: str, nearly_empty: str = "0.50") -> str:
    """Users op / viewer / admin; every 5th meter starts low (a low-balance alarm), every
    7th nearly empty (``nearly_empty``: 0.50 lasts minutes, 0.03 seconds)."""
    per_gateway = -(-meters // gateways)
    parts = [f"""
[server]
data_dir = "{data_dir}"
currency = "CNY"
snapshot_interval = "5s"

[calendar]
timezone = "Asia/Shanghai"

[hub]
listen = "127.0.0.1:{hub_port}"

[http]
listen = "127.0.0.1:{http_port}"
hub_url = "{hub_url}"

[opcua]
endpoint = "opc.tcp://127.0.0.1:{free_port()}/wattkeeper/"
security = "none"

[tariffs.flat]
kind = "flat"
price = "1.00"
"""]
    for name, password in LOGINS.items():
        role = "operator" if name == "op" else name
        parts.append(f'\n[[users]]\nname = "{name}"\npassword = "{password}"\nrole = "{role}"\n')
    for g in range(gateways):
        parts.append(f"""
[[gateways]]
id = "gw{g + 1}"
host = "127.0.0.1"
port = {gateway_port + g}
poll_interval = "1s"
timeout = "500ms"
window = 8
""")
    for n in range(meters):
        gateway, unit = divmod(n, per_gateway)
        opening = nearly_empty if n % 7 == 6 else "30.00" if n % 5 == 4 else "300.00"
        parts.append(f"""
[[meters]]
id = "M-{n + 1:04d}"
tenant = "tenant-{n // 2 + 1:03d}"
gateway = "gw{gateway + 1}"
unit = {unit + 1}
profile = "sdm630"
relay_coil = 0
tariff = "flat"
alarm_levels = ["50.00", "20.00"]
opening_balance = "{opening}"
""")
    return "".join(parts)


@attrs.define
class LivePark:
    http_url: str
    hub_url: str
    proxy: TcpProxy
    data_dir: Path
    processes: list[subprocess.Popen[bytes]]
    meters: int

    def api(self, user: str = "op") -> httpx.Client:
        return httpx.Client(base_url=self.http_url, auth=(user, LOGINS[user]), timeout=10)

    def meter(self, meter_id: str) -> dict[str, Any]:
        with self.api("viewer") as client:
            answer = client.get(f"/api/meters/{meter_id}")
            answer.raise_for_status()
            body: dict[str, Any] = answer.json()
            return body


def _wattkeeper(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "server.cli", *args], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_for(url: str, processes: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@contextlib.contextmanager
def live_park(directory: Path, *, meters: int = 12, gateways: int = 1,
              nearly_empty: str = "0.50",
              prepare: Callable[[Path], None] | None = None) -> Iterator[LivePark]:
    """``prepare(config_file)`` runs before the server starts (to write a history, say)."""
    hub_port, http_port = free_port(), free_port()
    gateway_port = free_port()  # consecutive ports for several gateways: probed one by one
    while gateways > 1 and not all(_is_free(gateway_port + g) for g in range(gateways)):
        gateway_port = free_port()
    proxy = TcpProxy(hub_port)
    config = directory / "park.toml"
    data_dir = directory / "data"
    config.write_text(park_toml(data_dir, meters=meters, gateways=gateways,
                                gateway_port=gateway_port, hub_port=hub_port,
                                http_port=http_port, hub_url=proxy.url,
                                nearly_empty=nearly_empty))
    if prepare is not None:
        prepare(config)
    processes = [_wattkeeper("sim", "--config", str(config), log=directory / "sim.log")]
    try:
        processes.append(_wattkeeper("serve", "--config", str(config),
                                     log=directory / "serve.log"))
        http_url = f"http://127.0.0.1:{http_port}"
        _wait_for(http_url + "/healthz", processes, 30)
        yield LivePark(http_url, proxy.url, proxy, data_dir, processes, meters)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        proxy.close()


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
