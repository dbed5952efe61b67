"""LMDB persistence: the money journal (group commit), snapshots, recovery, interval history.

Modules, one job each:

* ``store``     — the data directory: exclusive lock, the LMDB environment, its named databases,
  the schema version and map growth;
* ``keys``      — how keys are laid out (big-endian integers, ``meter_id + NUL + ...``);
* ``codec``     — msgpack encodings of meter states and journal entries (versioned arrays);
* ``entries``   — the journal's records (``JournalEntry``, ``Recorded``) and their meaning for a
  meter (``to_message``);
* ``writer``    — the LMDB write transactions: batches, group commit, map growth;
* ``index``     — ``refs`` and ``meter_journal``, written behind the journal, and its tail;
* ``writer_process`` — the process those run in (no GIL shared with the control loop);
* ``writer_link`` — the trio side of that process: spawn and restart it, stream work, read results;
* ``restarts``  — how soon a dead writer is restarted (backoff, restart intensity);
* ``journal``   — the trio side: idempotent ``record``, ordered delivery, ``*_nowait`` writes;
* ``recovery``  — snapshots + newer journal entries back into meter states;
* ``history``   — interval history read back for reports.
"""
