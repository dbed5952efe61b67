"""``wattkeeper check --config PARK.toml``: verify a data directory, read-only; say what is wrong.

Exit status: 0 when every record is usable (notes may be printed), 1 when anything is wrong
(each problem named by database and key) or the data directory cannot be read, 2 when the
config cannot be used. Safe while the server runs: the directory is opened as an LMDB reader
(``persistence.readonly``), its lock is not taken, nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from persistence.check import CHECKED, CheckReport, check_store
from persistence.readonly import open_store_readonly
from persistence.store import StoreError

EXIT_CLEAN = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def run_check_command(args: argparse.Namespace) -> int:
    from server.config import ConfigError, load_config

    try:
        config = load_config(Path(args.config))
    except (ConfigError, OSError) as error:
        message = f"{error.strerror}: {error.filename}" if isinstance(error, OSError) else error
        print(f"wattkeeper check: {message}", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = open_store_readonly(config.server.data_dir)
    except StoreError as error:
        print(f"wattkeeper check: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    with store:
        report = check_store(store, {meter.id for meter in config.meters})
    print_report(report, sys.stdout)
    return EXIT_CLEAN if report.clean else EXIT_PROBLEMS


def print_report(report: CheckReport, out: TextIO) -> None:
    """Counts first, then each problem and note with its database and key, then the verdict."""
    schema = "no schema version" if report.schema is None else f"schema {report.schema}"
    print(f"data directory {report.path} ({schema})", file=out)
    width = max(map(len, CHECKED))
    for name in CHECKED:
        line = f"  {name:<{width}}  {report.counts[name]:>10,}"
        if name == "journal" and report.counts[name]:
            line += (f"  last seq {report.last_seq}, indexed through seq {report.indexed}"
                     f" ({report.last_seq - report.indexed} in the tail)")
        print(line, file=out)
    errors, notes = report.errors, report.notes
    if report.error_count:
        print(f"{_count(report.error_count, 'problem')}:", file=out)
        for finding in errors:
            print(f"  {finding}", file=out)
        _more(report.error_count - len(errors), out)
    if report.note_count:
        print(f"{_count(report.note_count, 'note')}:", file=out)
        for finding in notes:
            print(f"  {finding}", file=out)
        _more(report.note_count - len(notes), out)
    if report.clean:
        print("OK: every record is readable and the indexes agree with the journal", file=out)
    else:
        print(
            f"NOT OK: {_count(report.error_count, 'problem')}. A meter whose snapshot or journal "
            f"entry is named above starts faulted (quarantined) until that record is restored "
            f"from a backup: see docs/operations.md, \"A corrupt record\".",
            file=out,
        )


def _count(number: int, word: str) -> str:
    return f"{number:,} {word}{'' if number == 1 else 's'}"


def _more(left_out: int, out: TextIO) -> None:
    if left_out:
        print(f"  ... and {left_out:,} more", file=out)
