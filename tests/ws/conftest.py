from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ws import client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Client sockets a test left open are closed (an unclosed socket warns, and warnings
    are errors)."""
    yield
    while client.OPEN:
        ws = client.OPEN.pop()
        ws.close()
        ws.shutdown()  # close() skips the socket when the server closed first
