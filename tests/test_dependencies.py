"""Dependencies point one way (DESIGN.md): ``server -> protocols/actors/persistence -> policies``.

Read from the source with ``ast`` (every import, including those under ``TYPE_CHECKING`` and
inside functions: a lazy import is still a dependency), so a wrong-way import fails here, in
the change that adds it, not months later as an import cycle.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PACKAGES = ("server", "protocols", "actors", "persistence", "policies", "simulators", "bench")
# (the dependency rules below parse these; "tests" is parsed only for third-party imports)

ALLOWED: dict[str, frozenset[str]] = {
    # The pure core: nothing of the project (its own purity test lists the stdlib it may use).
    "policies": frozenset(),
    # The middle layer: the core only, never each other and never the wiring above.
    "actors": frozenset({"policies"}),
    "persistence": frozenset({"policies"}),
    "protocols": frozenset({"policies"}),
    # The simulator speaks the protocols' wire formats and nothing of the server: it is also
    # the test rig for servers that are not ours.
    "simulators": frozenset({"protocols", "policies"}),
    "server": frozenset({"protocols", "actors", "persistence", "policies", "simulators"}),
    "bench": frozenset(PACKAGES) - {"bench"},
}

# Libraries that do I/O, read clocks or schedule: never in the pure core.
IO_LIBRARIES = frozenset({
    "asyncio", "asyncua", "lmdb", "msgpack", "os", "pathlib", "psutil", "pymodbus", "random",
    "selectors", "socket", "ssl", "subprocess", "threading", "time", "trio", "trio_asyncio",
    "trio_websocket", "urllib", "http", "io", "shutil", "signal", "multiprocessing",
})


def _modules(path: Path, package_parts: tuple[str, ...]) -> set[str]:
    """The absolute module names ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def _imports_by_file(package: str) -> dict[Path, set[str]]:
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[path] = _modules(path, parts[:-1])  # a module's package (__init__'s: itself)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = []
    for path, modules in _imports_by_file(package).items():
        for module in sorted(modules):
            top = module.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_policies_import_no_io_library() -> None:
    wrong = [
        f"{path.relative_to(REPO)} imports {module}"
        for path, modules in _imports_by_file("policies").items()
        for module in sorted(modules)
        if module.split(".")[0] in IO_LIBRARIES
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The parser itself: plain, from, relative, lazy and TYPE_CHECKING imports all count."""
    source = tmp_path / "sample.py"
    source.write_text(
        "import trio\n"
        "from typing import TYPE_CHECKING\n"
        "from . import codec\n"
        "from ..policies import money\n"
        "if TYPE_CHECKING:\n"
        "    from server.config import ParkConfig\n"
        "def later():\n"
        "    import persistence.store\n"
    )
    assert _modules(source, ("protocols", "modbus")) == {
        "trio", "typing", "protocols.modbus", "protocols.policies",
        "server.config", "persistence.store",
    }


# --- declared dependencies match imports ---------------------------------------------------

PRODUCT = ("server", "protocols", "actors", "persistence", "policies", "simulators")


def _requirements() -> dict[str, list[str]]:
    """``runtime``, and each extra, as lists of pinned requirements from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"runtime": project["dependencies"], **project["optional-dependencies"]}


# Distributions whose import name is not their name with "_" for "-".
IMPORT_NAMES = {"websocket_client": "websocket"}


def _import_name(requirement: str) -> str:
    """``"pytest-trio==0.8.*"`` -> ``pytest_trio`` (and ``IMPORT_NAMES``)."""
    name = re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("-", "_")
    return IMPORT_NAMES.get(name, name)


def _third_party(packages: tuple[str, ...]) -> set[str]:
    ours = set(PACKAGES) | {"tests"}
    found = set()
    for package in packages:
        for modules in _imports_by_file(package).values():
            found |= {
                module.split(".")[0] for module in modules
            } - ours - set(sys.stdlib_module_names) - {"__future__"}
    return found


def test_the_server_declares_exactly_what_it_imports() -> None:
    declared = {_import_name(r) for r in _requirements()["runtime"]}
    assert _third_party(PRODUCT) == declared


def test_the_benches_need_only_the_bench_extra() -> None:
    requirements = _requirements()
    declared = {_import_name(r) for r in requirements["runtime"] + requirements["bench"]}
    assert _third_party(("bench",)) <= declared
    # Nothing in the extra that no bench imports.
    assert {_import_name(r) for r in requirements["bench"]} <= _third_party(("bench",))


def test_dev_installs_the_bench_extra_and_the_tests_imports() -> None:
    requirements = _requirements()
    assert set(requirements["bench"]) <= set(requirements["dev"])  # the same pins
    declared = {_import_name(r) for r in requirements["runtime"] + requirements["dev"]}
    assert _third_party(("tests",)) <= declared


def test_bench_says_which_extra_to_install_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main

    # None in sys.modules: `import psutil` fails as if it were not installed.
    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.setitem(sys.modules, "pymodbus", None)
    assert main(["bench", "core"]) == 1
    assert capsys.readouterr().err == (
        "wattkeeper bench: the core benchmark needs psutil and pymodbus from the bench extra: "
        "pip install 'wattkeeper[bench]' (in a checkout: pip install -e '.[bench]')\n"
    )
