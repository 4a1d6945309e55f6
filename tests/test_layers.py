"""The tree shows the layers, and the code keeps to them: no module imports from a layer above
its own, and the command line never calls the store itself (it calls one service function).

Layers, lowest first: core (rules and values, no I/O of the queue) < store (the databases) <
service (use cases) < runtime and web (processes, HTTP) < cli. An import only for type
annotations (under ``TYPE_CHECKING``) is not a dependency and is allowed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "queuectl"
RANK = {"core": 0, "store": 1, "service": 2, "runtime": 3, "web": 3, "cli": 4}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "queuectl" and parts[1] in RANK else None


def runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported outside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def test_no_module_imports_from_a_higher_layer() -> None:
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "queuectl." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = layer_of(module)
        if own is None:
            continue
        for imported in runtime_imports(ast.parse(path.read_text())):
            target = layer_of(imported)
            if target is not None and RANK[target] > RANK[own]:
                offences.append(f"{module} imports {imported}")
    assert offences == []


def test_every_module_lives_in_a_layer() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []


def test_the_cli_never_calls_the_store() -> None:
    calls = []
    for path in sorted((PACKAGE / "cli").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"\bstore(_of\(ctx\))?\.\w+\(", line):
                calls.append(f"{path.name}:{number}: {line.strip()}")
    assert calls == []


def test_the_store_contract_is_narrow() -> None:
    from queuectl.store.base import Store

    assert len(Store.__abstractmethods__) < 25
