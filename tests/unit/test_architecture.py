"""The package's shape, checked from its source with `ast` (nothing is imported).

- No module imports another module's private (`_name`) name, nor reaches one as `module._name`.
- No import cycles among `dpo_cli` modules. Every import that runs counts: module-level ones and
  the ones inside functions (a function-level import only hides a cycle until the function
  runs). Imports under `if TYPE_CHECKING:` never run and name types only, so they do not count.
- The top of `dpo_cli/` holds the shared core only; every feature lives in its own package.
- The core (those modules, `config/` and `data/`) imports no feature: features build on it.

Each allowlist names what is tolerated today and must only shrink: an entry that no longer
occurs fails the test too, so that it is removed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dpo_cli"

# Modules allowed at the top of dpo_cli/: the shared core every feature may use.
CORE_MODULES = {
    "__init__",
    "__main__",
    "errors",
    "fsio",
    "rundir",
    "checkpoints",
    "interrupts",
    "models",
    "generation",
    "doctor",
    "scorers",
}

# Tolerated for now; each entry must still occur (see the module docstring).
LOOSE_ALLOWED: set[str] = set()
PRIVATE_ALLOWED: set[tuple[str, str, str]] = set()  # (importing module, imported module, private name)
CYCLES_ALLOWED: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def resolve(dotted: str) -> str | None:
    """The dpo_cli module a dotted import target lives in (`dpo_cli.a.b.name` -> `dpo_cli.a.b`)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def runtime_imports(tree: ast.AST):
    """Every import statement that runs (skipping `if TYPE_CHECKING:` blocks)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        for node in runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = absolute(name, node)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if not target.startswith("dpo_cli"):
                    continue
                found = resolve(target)
                if found and found != name:
                    graph[name].add(found)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm, iterative; components of more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def private_imports() -> set[tuple[str, str, str]]:
    """(importer, imported module, private name) for each private name taken from another module."""
    found = set()
    for name, tree in TREES.items():
        aliases: dict[str, str] = {}  # local name -> dpo_cli module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = absolute(name, node)
                if not base.startswith("dpo_cli"):
                    continue
                for alias in node.names:
                    if f"{base}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
                    elif is_private(alias.name) and resolve(base) != name:
                        found.add((name, resolve(base) or base, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("dpo_cli") and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and is_private(node.attr)
                and aliases[node.value.id] != name
            ):
                found.add((name, aliases[node.value.id], node.attr))
    return found


def test_no_private_names_cross_modules():
    found = private_imports()
    new = sorted(found - PRIVATE_ALLOWED)
    assert not new, "private names imported from another module (make them public or move them):\n" + "\n".join(
        f"  {importer} uses {module}.{name}" for importer, module, name in new
    )
    gone = sorted(PRIVATE_ALLOWED - found)
    assert not gone, f"allowlisted private imports that no longer occur; remove them from PRIVATE_ALLOWED: {gone}"


def test_no_import_cycles():
    graph = import_graph()
    cycles = set(strongly_connected(graph))
    new = cycles - CYCLES_ALLOWED
    lines = []
    for component in sorted(new, key=sorted):
        edges = [f"{a} -> {b}" for a in sorted(component) for b in sorted(graph[a] & component)]
        lines.append("  " + "; ".join(edges))
    assert not new, "import cycles among dpo_cli modules:\n" + "\n".join(lines)
    gone = CYCLES_ALLOWED - cycles
    assert not gone, f"allowlisted cycles that are gone; remove them from CYCLES_ALLOWED: {sorted(map(sorted, gone))}"


def test_top_level_holds_the_core_only():
    loose = {p.stem for p in PACKAGE.glob("*.py")} - CORE_MODULES
    new = sorted(loose - LOOSE_ALLOWED)
    assert not new, f"modules at the top of dpo_cli/ outside the core; put each in its feature's package: {new}"
    gone = sorted(LOOSE_ALLOWED - loose)
    assert not gone, f"allowlisted loose modules that are gone; remove them from LOOSE_ALLOWED: {gone}"


CORE_PACKAGES = {"config", "data"}


def is_core(module: str) -> bool:
    top = module.split(".")[1] if "." in module else ""
    return (top in CORE_MODULES or top in CORE_PACKAGES) and top != "__main__"  # `python -m dpo_cli` runs the CLI


def test_the_core_imports_no_feature():
    graph = import_graph()
    found = sorted(f"{a} -> {b}" for a, targets in graph.items() if is_core(a) for b in targets if not is_core(b))
    assert not found, "core modules importing a feature (move the shared part into the core):\n  " + "\n  ".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from dpo_cli.x import _y\n", {("dpo_cli.probe", "dpo_cli.x", "_y")}),
        ("def f():\n    from dpo_cli import x\n    return x._y()\n", {("dpo_cli.probe", "dpo_cli.x", "_y")}),
        ("from dpo_cli.x import __version__, y\n", set()),
    ],
)
def test_the_private_check_catches_what_it_should(monkeypatch, source, expected):
    # The checks read the real tree; a probe module shows that they can fail.
    monkeypatch.setitem(MODULES, "dpo_cli.x", PACKAGE / "x.py")
    monkeypatch.setitem(MODULES, "dpo_cli.probe", PACKAGE / "probe.py")
    monkeypatch.setattr(
        __import__("tests.unit.test_architecture", fromlist=["TREES"]), "TREES", {"dpo_cli.probe": ast.parse(source)}
    )
    assert private_imports() == expected


def test_function_level_imports_count_and_type_checking_ones_do_not(monkeypatch):
    monkeypatch.setitem(MODULES, "dpo_cli.x", PACKAGE / "x.py")
    monkeypatch.setitem(MODULES, "dpo_cli.y", PACKAGE / "y.py")
    trees = {
        "dpo_cli.x": ast.parse("def f():\n    from dpo_cli.y import g\n"),
        "dpo_cli.y": ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dpo_cli.x import f\n"),
    }
    monkeypatch.setattr(__import__("tests.unit.test_architecture", fromlist=["TREES"]), "TREES", trees)
    graph = import_graph()
    assert graph["dpo_cli.x"] == {"dpo_cli.y"} and graph["dpo_cli.y"] == set()
    trees["dpo_cli.y"] = ast.parse("from dpo_cli import x\n")
    assert strongly_connected(import_graph()) == [frozenset({"dpo_cli.x", "dpo_cli.y"})]
