"""The pure core stays pure: policies import only the standard library, attrs and policies.*."""

from __future__ import annotations

import ast
import pathlib

import policies

ALLOWED_TOP_LEVEL = {
    "__future__", "attrs", "bisect", "collections", "datetime", "decimal", "math", "typing",
    "zoneinfo", "policies",
    "fractions",  # exact ratios (policies.insights): pure arithmetic, like decimal
}
# No clocks, no randomness, no I/O: these must not appear even though they are stdlib.
FORBIDDEN_NAMES = {"time", "random", "os", "socket", "trio", "lmdb", "asyncio"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_policies_import_nothing_impure() -> None:
    package = pathlib.Path(policies.__file__).parent
    for path in sorted(package.glob("*.py")):
        imported = _imports(path)
        assert imported <= ALLOWED_TOP_LEVEL, (path.name, imported - ALLOWED_TOP_LEVEL)
        assert not imported & FORBIDDEN_NAMES, (path.name, imported & FORBIDDEN_NAMES)
