"""The park as its clients see it: the stream's records (``views``) and their msgpack form
across a process boundary with the mirror that applies it (``feed``). Shared by every adapter
that follows the park: the websocket hub, the OPC UA server, HTTP."""
