"""Turning a file or a text into a :class:`~server.config.records.ParkConfig`, or a
:class:`~server.config.records.ConfigError` listing every problem in file order."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from protocols.toml.limits import TomlNestingError, parse_toml
from protocols.toml.problems import Problem
from server.config.reader import ParkReader
from server.config.records import MAX_CONFIG_BYTES, ConfigError, ParkConfig


def load_config(path: Path | str) -> ParkConfig:
    """Read a park config file; every problem (including an unreadable file) is a ConfigError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:  # refused before reading it into memory
            raise ConfigError([_too_big_problem(str(path), size)])
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {reason}")]) from None
    except UnicodeDecodeError as error:
        message = f"not UTF-8 text (byte {error.start})"
        raise ConfigError([Problem(str(path), None, "", message)]) from None
    return ParkConfig.from_toml_text(text, str(path), base_dir=path.absolute().parent)



def parse_config(text: str, source_name: str = "<config>", *,
                 base_dir: Path | None = None) -> ParkConfig:
    """:meth:`ParkConfig.from_toml_text`'s work (that method says what it checks)."""
    if text.startswith("\ufeff"):  # a BOM from Windows editors is not a TOML error
        text = text[1:]
    # Characters <= bytes: encode only a text that might be over the limit.
    if len(text) > MAX_CONFIG_BYTES // 4 and len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigError([_too_big_problem(source_name, len(text.encode()))])
    try:
        document = parse_toml(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_problem(error, source_name)]) from None
    except TomlNestingError as error:
        raise ConfigError([Problem(source_name, error.line, "", str(error))]) from None
    reader = ParkReader(document, base_dir or Path())
    config = reader.read(source_name)
    if reader.problems.items:
        raise ConfigError(reader.problems.located(text, source_name))
    assert config is not None  # read() returns None only when it recorded problems
    return config


def _too_big_problem(source: str, size: int) -> Problem:
    return Problem(
        source, None, "",
        f"the file is {size / (1 << 20):.1f} MiB, more than the {MAX_CONFIG_BYTES >> 20} MiB a "
        "park config may have (split the park: one server per group of gateways)",
    )


def _syntax_problem(error: tomllib.TOMLDecodeError, source: str) -> Problem:
    text = str(error)
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", text, re.DOTALL)
    if match:
        reason = match[1][:1].lower() + match[1][1:]
        return Problem(
            source, int(match[2]), "", f"TOML syntax error at column {match[3]}: {reason}"
        )
    reason = text.replace(" (at end of document)", "")
    return Problem(source, None, "", f"TOML syntax error at the end of the file: {reason}")

