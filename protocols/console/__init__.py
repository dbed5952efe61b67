"""The terminal console (``wattkeeper console``): a textual app over the websocket hub.

``model`` (park state, filters), ``client`` (the hub protocol, sans-I/O), ``session``
(websockets on asyncio, reconnects) and ``app`` (textual). See docs/console.md.
"""
