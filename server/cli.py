"""The ``wattkeeper`` command line: one sub-command per job, each with ``--help``.

Errors a user can fix (a bad config, a data directory in use, a port taken) are printed to
stderr in words, with a non-zero exit status and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1

BENCHMARKS = ("core", "modbus")


class UserError(Exception):
    """An error that is the user's to fix; printed without a traceback."""


def interrupted_only(error: BaseException) -> bool:
    """Ctrl-C, possibly wrapped in trio's nursery exception groups (one per nursery level)."""
    if isinstance(error, BaseExceptionGroup):
        return all(interrupted_only(inner) for inner in error.exceptions)
    return isinstance(error, KeyboardInterrupt)


def _serve(args: argparse.Namespace) -> int:
    from server.app import serve_forever
    from server.config import load_config

    # The config resolves every meter's profile (shipped or from its profile_files), so an
    # unknown or broken one is a config error with its line, before anything starts.
    config = load_config(Path(args.config))
    serve_forever(config)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from server.demo import run_demo

    run_demo(meters=args.meters, gateways=args.gateways, data_dir=args.data, port=args.port,
             seconds=args.seconds)
    return 0


def _sim(args: argparse.Namespace) -> int:
    from server.simulate import run_simulator_command

    return run_simulator_command(args)


def _check(args: argparse.Namespace) -> int:
    from server.check import run_check_command

    return run_check_command(args)


def _bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"bench.{args.name}")
    bench_main: Callable[[list[str]], int] = module.main
    forwarded = list(args.bench_args)
    if args.json:
        forwarded.append("--json")
    return bench_main(forwarded)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattkeeper",
        description="Real-time control server for prepaid electricity, water and gas meters.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server for a park config")
    serve.add_argument("--config", required=True, metavar="PARK.toml", help="park config file")
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo", help="run a simulated park and the server together on loopback"
    )
    demo.add_argument("--meters", type=int, default=200, help="simulated meters (default 200)")
    demo.add_argument("--gateways", type=int, default=4, help="Modbus gateways (default 4)")
    demo.add_argument("--data", type=Path, default=None, metavar="DIR",
                      help="data directory (default: a fresh temporary directory)")
    demo.add_argument("--port", type=int, default=15020,
                      help="first simulated gateway port (default 15020)")
    demo.add_argument("--seconds", type=float, default=None,
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.set_defaults(run=_demo)

    sim = commands.add_parser("sim", help="run the Modbus gateway simulator alone")
    sim.add_argument("--config", metavar="PARK.toml", help="simulate the meters of a park config")
    sim.add_argument("--meters", type=int, help="number of simulated meters")
    sim.add_argument("--gateways", type=int, default=1, help="number of gateways (default 1)")
    sim.add_argument("--port", type=int, default=5020, help="first gateway port (default 5020)")
    sim.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sim.add_argument("--seed", type=int, default=1, help="load profile seed (default 1)")
    sim.add_argument("--profile", default="sdm630", help="meter profile (default sdm630)")
    sim.add_argument("--scenario", type=Path, help="scenario file (faults and expectations)")
    sim.add_argument("--fault", action="append", default=[], metavar="SPEC",
                     help="inject a fault, e.g. gw1/3:overload:power=45000,for=5s "
                          "(see docs/simulator.md); repeatable")
    sim.add_argument("--seconds", type=float, default=None,
                     help="stop after this many seconds (default: run until Ctrl-C)")
    sim.set_defaults(run=_sim)

    check = commands.add_parser(
        "check", help="verify a data directory, read-only (safe while the server runs)"
    )
    check.add_argument("--config", required=True, metavar="PARK.toml", help="park config file")
    check.set_defaults(run=_check)

    bench = commands.add_parser("bench", help="run a benchmark against its baseline")
    bench.add_argument("name", choices=BENCHMARKS, help="which benchmark")
    bench.add_argument("--json", action="store_true", help="end with one JSON object line")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER,
                       help="options for the benchmark (see `wattkeeper bench NAME -- --help`)")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        result: int = args.run(args)
        return result
    except BaseExceptionGroup as group:
        if interrupted_only(group):
            return 130
        raise
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        message = _user_message(error)
        if message is None:
            raise
        print(f"wattkeeper {args.command}: {message}", file=sys.stderr)
        return EXIT_FAILURE


def _user_message(error: Exception) -> str | None:
    """The words for errors a user can act on; None means a bug (traceback wanted)."""
    from persistence.store import StoreError
    from protocols.modbus.profiles import ProfileError
    from server.config import ConfigError

    if isinstance(error, BaseExceptionGroup):
        # trio nurseries wrap errors in groups; a user error inside one is still the user's.
        leaves = [leaf for leaf in _leaves(error) if isinstance(leaf, Exception)]
        messages = [m for m in (_user_message(leaf) for leaf in leaves) if m is not None]
        return "; ".join(messages) if messages and len(messages) == len(leaves) else None
    # A profile error names the profile and what is wrong with it (or which ones exist).
    if isinstance(error, ConfigError | StoreError | UserError | ProfileError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror}: {error.filename}"
    if isinstance(error, OSError):
        return str(error)
    return None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            leaves.extend(_leaves(inner))
        else:
            leaves.append(inner)
    return leaves


if __name__ == "__main__":
    sys.exit(main())
