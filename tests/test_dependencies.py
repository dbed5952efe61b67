"""Dependencies point one way (DESIGN.md): ``server -> protocols/actors/persistence -> policies``.

Read from the source with ``ast`` (every import, including those under ``TYPE_CHECKING`` and
inside functions: a lazy import is still a dependency), so a wrong-way import fails here, in
the change that adds it, not months later as an import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PACKAGES = ("server", "protocols", "actors", "persistence", "policies", "simulators", "bench")

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
