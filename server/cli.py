"""The ``wattkeeper`` command line: one sub-command per job, each with ``--help``.

Errors a user can fix (a bad config, a data directory in use, a port taken) are printed to
stderr in words, with a non-zero exit status and no traceback. The long-running commands
(``serve``, ``demo``) log to a file in their data directory (``server.logs``) and end every
fatal error, theirs or a bug, with one line on stderr: ``wattkeeper serve: stopped: <reason>
(details in <log file>)``; the traceback is in that file, never on the terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from server.errors import UserError, fatal_reason, interrupted_only, user_message
from server.logs import (
    close_log_file,
    configure_console,
    current_log_file,
    log_fatal,
    open_log_file,
)

EXIT_FAILURE = 1

BENCHMARKS = ("core", "modbus", "chaos", "hub", "console", "opcua", "reports", "notify")


def _serve(args: argparse.Namespace) -> int:
    from server.app import serve_forever
    from server.config import load_config

    # The config resolves every meter's profile (shipped or from its profile_files), so an
    # unknown or broken one is a config error with its line, before anything starts.
    config = load_config(Path(args.config))
    log_file = open_log_file(config.server.data_dir)
    logging.getLogger(__name__).info("wattkeeper serve: %s; log file %s", config.source, log_file)
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


def _report(args: argparse.Namespace) -> int:
    from persistence.store import StoreError
    from server.config import load_config
    from server.reports import make_report, render_report, statement_page
    from server.reports.books import open_books_store

    config = load_config(args.config)
    try:
        store = open_books_store(config)
    except StoreError as error:
        raise UserError(str(error)) from None
    with store:
        if args.format == "html":
            if args.kind != "statement":
                raise UserError("--format html is for statements; use csv or json")
            sys.stdout.write(statement_page(store, config, args.tenant, first=args.from_date,
                                            end=args.to_date))
            return 0
        report = make_report(args.kind, store, config, first=args.from_date, end=args.to_date,
                             by=args.by, tenant=args.tenant, tariff=args.tariff,
                             meter_kind=args.meter_kind, shift=args.shift)
    sys.stdout.write(render_report(report, args.format))
    return 0


def _opcua_trust(args: argparse.Namespace) -> int:
    from protocols.opcua.security import trust_certificate
    from server.config import load_config

    config = load_config(args.config)
    try:
        target = trust_certificate(config.server.data_dir, args.cert)
    except FileNotFoundError:
        raise UserError(f"no such file: {args.cert}") from None
    except ValueError as error:
        raise UserError(f"{args.cert} is not an X.509 certificate in DER or PEM ({error})"
                        ) from None
    except OSError as error:
        raise UserError(f"cannot write the trust list: {error}") from None
    print(f"trusted: {target} (OPC UA clients with this certificate may connect; the "
          "running server reads the trust list again at the next connection)")
    return 0


PASSWORD_ENV: Final = "WATTKEEPER_PASSWORD"
"""``wattkeeper console`` takes the password from here when set (scripts), else prompts."""


def _console(args: argparse.Namespace) -> int:
    import getpass
    import os
    import ssl

    from protocols.console.app import run_console
    from protocols.console.session import ConsoleError

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        try:
            password = getpass.getpass(f"password for {args.user} at {args.url}: ")
        except EOFError:
            raise UserError(f"no password given (type it at the prompt, or set {PASSWORD_ENV})"
                            ) from None
    context = None
    if args.cafile is not None:
        try:
            context = ssl.create_default_context(cafile=str(args.cafile))
        except (OSError, ssl.SSLError) as error:
            raise UserError(f"cannot read the CA file {args.cafile}: {error}") from None
    try:
        run_console(args.url, args.user, password, open_timeout_s=args.timeout,
                    ssl_context=context)
    except ConsoleError as error:
        raise UserError(str(error)) from None
    return 0


def _passwd(args: argparse.Namespace) -> int:
    """Prompt twice (never echoed, never on the command line), print the hash line."""
    import getpass

    from server.auth import MAX_PASSWORD_BYTES, hash_password

    try:
        first = getpass.getpass("New password: ")
        if not first:
            raise UserError("an empty password is not allowed; nothing was printed")
        second = getpass.getpass("Same password again: ")
    except EOFError:
        raise UserError("no password given (end of input); nothing was printed") from None
    if first != second:
        raise UserError("the two passwords differ; nothing was printed, run it again")
    if len(first.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise UserError(f"a password is at most {MAX_PASSWORD_BYTES} bytes of UTF-8")
    print("Put this line in the user's [[users]] table, in place of the plain password:",
          file=sys.stderr)
    print(f'password = "{hash_password(first)}"')
    return 0


BENCH_EXTRA: Final = frozenset({"pymodbus", "psutil", "playwright", "aiosmtpd"})
"""What ``pip install 'wattkeeper[bench]'`` adds (pyproject.toml); the server never needs it."""


def _bench(args: argparse.Namespace) -> int:
    import importlib
    import importlib.util

    forwarded = list(args.bench_args)
    if "--" in forwarded:  # `bench core -- --meters 1000`, `bench hub --json -- --seconds 8`
        forwarded.remove("--")
    if args.json:
        forwarded.append("--json")
    # Checked before anything runs: bench modbus would otherwise find pymodbus missing only
    # when its baseline phase starts, minutes in.
    missing = sorted(name for name in BENCH_EXTRA if importlib.util.find_spec(name) is None)
    try:
        if missing:
            raise ModuleNotFoundError(name=missing[0])
        module = importlib.import_module(f"bench.{args.name}")
        bench_main: Callable[[list[str]], int] = module.main
        return bench_main(forwarded)
    except ModuleNotFoundError as error:
        name = (error.name or "").partition(".")[0]
        if name not in BENCH_EXTRA:
            raise
        raise UserError(
            f"the {args.name} benchmark needs {' and '.join(missing or [name])} from the bench "
            "extra: pip install 'wattkeeper[bench]' (in a checkout: pip install -e '.[bench]')"
        ) from None


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
    sim.add_argument("--transport", choices=("tcp", "rtu-over-tcp"), default=None,
                     help="framing the gateways speak: Modbus TCP (default) or RTU frames "
                          "over TCP, as a serial-to-Ethernet converter does")
    sim.add_argument("--scenario", type=Path, help="scenario file (faults and expectations)")
    sim.add_argument("--fault", action="append", default=[], metavar="SPEC",
                     help="inject a fault, e.g. gw1/3:overload:power=45000,for=5s "
                          "(see docs/simulator.md); repeatable")
    sim.add_argument("--seconds", type=float, default=None,
                     help="stop after this many seconds (default: run until Ctrl-C)")
    sim.set_defaults(run=_sim)

    console = commands.add_parser(
        "console", help="terminal console over the websocket hub (docs/console.md)",
        description="The operators' terminal console. The password is prompted for (never "
                    f"on the command line); scripts may set {PASSWORD_ENV} instead.",
    )
    console.add_argument("--url", required=True, metavar="ws://HOST:PORT",
                         help="the hub's address ([hub] listen; wss:// when it has TLS)")
    console.add_argument("--user", required=True, metavar="U", help="user name ([[users]])")
    console.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                         help="give up connecting or logging in after this long (default 10)")
    console.add_argument("--cafile", type=Path, default=None, metavar="PEM",
                         help="trust this CA (or self-signed certificate) for wss://")
    console.set_defaults(run=_console)

    check = commands.add_parser(
        "check", help="verify a data directory, read-only (safe while the server runs)"
    )
    check.add_argument("--config", required=True, metavar="PARK.toml", help="park config file")
    check.set_defaults(run=_check)

    passwd = commands.add_parser(
        "passwd", help="prompt for a password and print the hash to put in [[users]]",
        description="Prompts twice for a password (not echoed) and prints the line "
                    "`password = \"scrypt$...\"` to put in a [[users]] table of the park "
                    "config instead of the plain password. Exit status 1, printing nothing, "
                    "when the two differ or the password is empty.")
    passwd.set_defaults(run=_passwd)

    from server.reports import FORMATS, GROUPINGS, KINDS

    report = commands.add_parser(
        "report", help="a report from the data directory (safe while the server runs)",
        description="Reports read the data directory as an LMDB reader, next to a running "
                    "server. reconciliation: every balance explained by the journal and the "
                    "history (exit status 1, naming the meters, when the books do not "
                    "balance); topups and consumption: over --from/--to (local days of the "
                    "park; default this month); arrears: as of now (--by day: at the end of "
                    "each day of --from/--to); statement --tenant T "
                    "(--format html: a printable page); whatif --tariff NAME: the period's "
                    "charges under another configured tariff, per tenant; apportionment: the "
                    "period's shares of losses and common areas and whether they are posted "
                    "(an admin posts them: POST /api/apportionment); blackhole: each "
                    "feeder's unexplained loss per hour (--by day: per day); output: energy "
                    "per unit of output per production line and day; insights: each "
                    "tenant's share of energy per tariff band, peak demand, load factor, "
                    "night base load and the saving if --shift percent of its peak energy moved "
                    "to the valley, beside the medians of its sector (docs/insights.md).")
    report.add_argument("kind", choices=KINDS, help="which report")
    report.add_argument("--config", required=True, metavar="PARK.toml", help="park config file")
    report.add_argument("--from", dest="from_date", metavar="DATE",
                        help="first day, e.g. 2026-11-01 (default: the 1st of this month)")
    report.add_argument("--to", dest="to_date", metavar="DATE",
                        help="the day after the last (default: tomorrow)")
    report.add_argument("--format", choices=FORMATS, default="csv", help="default csv")
    report.add_argument("--by", choices=(*GROUPINGS, "hour"), default="meter",
                        help="consumption: per meter (default), tenant, gateway or day; "
                             "arrears: per meter as of now (default) or per day; blackhole: "
                             "per hour (default) or day")
    report.add_argument("--tenant", metavar="NAME", help="statement: whose")
    report.add_argument("--tariff", metavar="NAME",
                        help="whatif: the configured tariff to price the period with")
    report.add_argument("--meter-kind", choices=("electricity", "water", "gas"),
                        default="electricity",
                        help="consumption, whatif: which meters (default electricity, in kWh; "
                             "water and gas in m3)")
    report.add_argument("--shift", metavar="PERCENT",
                        help="insights: the share of peak energy moved to the valley for the "
                             "saving, 0 to 100 (default 10)")
    report.set_defaults(run=_report)

    opcua = commands.add_parser("opcua", help="OPC UA server administration")
    opcua_commands = opcua.add_subparsers(dest="opcua_command", required=True,
                                          metavar="COMMAND")
    trust = opcua_commands.add_parser(
        "trust", help="add a client certificate to the OPC UA trust list",
        description="Copies a client's certificate (DER or PEM) into the trust list in the "
                    "data directory (<data_dir>/opcua/trusted/, as DER). With [opcua] "
                    "security = \"sign-encrypt\" (the default) only clients whose "
                    "certificate is there may connect. A running server picks it up at the "
                    "next connection.")
    trust.add_argument("cert", type=Path, metavar="CERT", help="the client certificate file")
    trust.add_argument("--config", required=True, metavar="PARK.toml", help="park config file")
    trust.set_defaults(run=_opcua_trust)

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
    configure_console(args.log_level)
    try:
        result: int = args.run(args)
        return result
    except KeyboardInterrupt:
        return 130
    except BaseException as error:
        if interrupted_only(error):
            return 130
        if not isinstance(error, Exception | BaseExceptionGroup):
            raise  # SystemExit and the like are not errors to word
        log_file = current_log_file()
        if log_file is not None:
            # A long-running command that had started: one line, the details in its log.
            reason = fatal_reason(error)
            log_fatal(reason, error)
            print(f"wattkeeper {args.command}: stopped: {reason} (details in {log_file})",
                  file=sys.stderr)
            return EXIT_FAILURE
        message = user_message(error)
        if message is None:
            raise
        print(f"wattkeeper {args.command}: {message}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        close_log_file()


if __name__ == "__main__":
    sys.exit(main())
