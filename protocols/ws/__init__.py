"""The websocket hub: JSON protocol (``protocol``), per-client outbox (``outbox``), the
trio-websocket server (``hub``) and what it needs from the server (``backend``). The protocol
is documented for clients in docs/protocol.md."""
