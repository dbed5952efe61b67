"""Reading the TOML files users write (park configs, meter profiles, simulator scenarios), with
errors that name the file, the line and the key, and suggest the key that was meant.

Theory of operation
-------------------
Every reader goes the same three steps. ``limits.parse_toml`` parses the text (``tomllib``,
with a nesting limit so a pathological file is an error, not a traceback). The reader then
walks the document through ``toolkit.Table`` views that convert and check each value, collect
every problem at its key path (``meters[3].tariff``, ``values.power.scale``) instead of
stopping at the first, and report keys nobody asked for with a "did you mean". Only if there
were problems does ``locate`` scan the source for the line of each key path, and the reader
raises its own ``problems.DocumentError`` (``ConfigError``, ``ProfileError``,
``ScenarioError``), every problem one line ``file:line: key.path: message``.

The value syntax every file shares is ``values``: the one duration grammar, and how values
and key paths are shown back. It lives here, below ``server``, because the profile loader
(``protocols.modbus``) and the simulator (``simulators``) may not import the server.

Modules: ``limits`` (parsing within limits), ``values`` (shared syntax), ``locate`` (key
path -> line), ``problems`` (what is wrong and where), ``toolkit`` (reading a table).
"""
