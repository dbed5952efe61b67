"""The OPC UA server in a process of its own, fed by the park stream.

``server.edge_process`` runs the child (``server.opcua_worker``), feeds it and restarts it;
this module says what is particular to OPC UA: its settings and the users in the first
message, its calls (the meter methods and the standard Acknowledge, through ``park.operations``
with the channel ``opcua``), and its figures for ``/metrics``. See docs/decisions.md for why
a process and not asyncua on the server's own thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from protocols.opcua.server import OpcUaSettings, OpcUaStatistics, endpoint_with_port
from server.config import User
from server.edge_link import INIT
from server.edge_process import Call, EdgeProcess
from server.hub_backend import ParkCommands, command_calls
from server.stream import ParkStream

log = logging.getLogger(__name__)

NO_STATISTICS: Final = OpcUaStatistics(0, 0.0, 0, 0, 0)


class OpcUaProcess(EdgeProcess):
    WORKER_MODULE = "server.opcua_worker"
    WHAT = "the OPC UA server"

    def __init__(self, settings: OpcUaSettings, users: Sequence[User], stream: ParkStream,
                 commands: ParkCommands, port: int) -> None:
        self._settings = settings
        self._users = users
        self._commands = commands
        self._statistics = NO_STATISTICS
        self.url = settings.endpoint
        super().__init__(stream, port)

    def statistics(self) -> OpcUaStatistics:
        return self._statistics if self.running else NO_STATISTICS

    def init_message(self, port: int) -> tuple[Any, ...]:
        # The port it had (a restart listens where clients knew it; port 0 for the first).
        fields = attrs.asdict(self._settings)
        fields["endpoint"] = endpoint_with_port(self._settings.endpoint, port)
        users = [(user.name, user.password, user.role) for user in self._users]
        return (INIT, fields, users, logging.getLogger().getEffectiveLevel())

    def calls(self) -> Mapping[str, Call]:
        return command_calls(self._commands)

    def on_statistics(self, row: Sequence[Any]) -> None:
        self._statistics = OpcUaStatistics(*row)

    def on_stopped(self) -> None:
        self._statistics = NO_STATISTICS
