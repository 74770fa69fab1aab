"""The layering rules, checked on the source: the import graph of the project's own modules.

A static check: it parses the project's ``.py`` files with ``ast`` (reading source files is its
only I/O; nothing is imported or run). Every import counts, at module level or inside a
function, except those under ``if TYPE_CHECKING:``: a function-local import runs as surely as a
top-level one, only later, so hiding a cycle inside a function does not remove it.
``__import__("x")`` and ``importlib.import_module("x")`` with a literal name count too.

Rules (docs/ARCHITECTURE.md): no import cycle between files; ``billing_core`` imports nothing
of ``config``, ``connectors``, ``sync`` or ``jobs``; ``connectors`` imports nothing of
``billing_core``, ``sync``, ``jobs`` or ``config``, and the sandbox CRM nothing outside itself;
``sync`` imports nothing of ``jobs`` (the wiring is the outer layer) and the HTTP API nothing
of the CLI; ``sync`` and ``jobs`` never name billing's tables module; no project import is
guarded by ``except ImportError`` (a broken import must break loudly).

Run as a script (``python tests/unit/test_layering.py``) it prints the graph's findings.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("billing_core", "config", "connectors", "sync", "jobs")
TABLES_RULE = re.compile(r"adapters\.tables|adapters import tables")
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)
    # (line, module) of each project import inside a ``try`` that catches ImportError
    guarded: list[tuple[int, str]] = field(default_factory=list)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(k, ast.Name) and k.id in _IMPORT_ERRORS for k in kinds):
            return True
    return False


class _Collector(ast.NodeVisitor):
    """Every imported name of one module (outside TYPE_CHECKING), absolute and dotted."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[int, str, bool]] = []    # (line, name, guarded)
        self._guard_depth = 0

    def _add(self, line: int, name: str) -> None:
        self.found.append((line, name, self._guard_depth > 0))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        guarded = _catches_import_error(node)
        self._guard_depth += guarded
        for child in node.body:
            self.visit(child)
        self._guard_depth -= guarded
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node.lineno, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            # ``from pkg import sub`` imports the submodule when there is one, else a name of pkg
            self._add(node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else "")
        if name in ("__import__", "import_module") and node.args and isinstance(
                node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self._add(node.lineno, node.args[0].value)
        self.generic_visit(node)


@cache
def project() -> dict[str, Module]:
    """The project's modules by dotted name, each with the project modules it imports."""
    paths = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    modules = {_module_name(p): Module(_module_name(p), p) for p in paths}
    for module in modules.values():
        collector = _Collector(module.name, module.path.name == "__init__.py")
        collector.visit(ast.parse(module.path.read_text(encoding="utf-8"), str(module.path)))
        for line, name, guarded in collector.found:
            target = _resolve(name, modules)
            if target is None or target == module.name:
                continue
            module.imports.add(target)
            if guarded:
                module.guarded.append((line, target))
    return modules


def _resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The project module an imported dotted name lives in (None: not the project's)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(modules[v].imports):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return sorted(found)


def _within(name: str, packages: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def forbidden(modules: dict[str, Module], source: str,
              targets: Iterable[str]) -> Iterator[str]:
    """``a -> b`` for every import from a module under ``source`` into one under ``targets``."""
    targets = tuple(targets)
    for module in sorted(modules.values(), key=lambda m: m.name):
        if _within(module.name, (source,)):
            for target in sorted(module.imports):
                if _within(target, targets):
                    yield f"{module.name} -> {target}"


def tables_rule(packages: Iterable[str] = ("sync", "jobs")) -> list[str]:
    """What ``grep -rnE "adapters\\.tables|adapters import tables" sync jobs`` prints."""
    hits = []
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if TABLES_RULE.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}:{line.strip()}")
    return hits


def guarded_imports(modules: dict[str, Module]) -> list[str]:
    return [f"{m.path.relative_to(ROOT)}:{line}: {target}"
            for m in sorted(modules.values(), key=lambda m: m.name)
            for line, target in m.guarded]


def report() -> str:
    modules = project()
    edges = sum(len(m.imports) for m in modules.values())
    lines = [f"{len(modules)} modules, {edges} import edges (outside TYPE_CHECKING)"]
    checks = {
        "cycles": [" -> ".join(c) for c in cycles(modules)],
        "billing_core -> config/connectors/sync/jobs": list(forbidden(
            modules, "billing_core", ("config", "connectors", "sync", "jobs"))),
        "connectors -> billing_core/sync/jobs/config": list(forbidden(
            modules, "connectors", ("billing_core", "sync", "jobs", "config"))),
        "sync -> jobs": list(forbidden(modules, "sync", ("jobs",))),
        "jobs.api -> jobs.cli": list(forbidden(modules, "jobs.api", ("jobs.cli",))),
        "connectors.sandbox -> the rest of the project": list(forbidden(
            modules, "connectors.sandbox",
            [p for p in PACKAGES if p != "connectors"] + _connectors_outside_sandbox(modules))),
        "adapters.tables named in sync/ or jobs/": tables_rule(),
        "project imports guarded by except ImportError": guarded_imports(modules),
    }
    for title, found in checks.items():
        lines.append(f"{title}: {'none' if not found else len(found)}")
        lines.extend(f"  {f}" for f in found)
    return "\n".join(lines)


def _connectors_outside_sandbox(modules: dict[str, Module]) -> list[str]:
    return [name for name in modules
            if _within(name, ("connectors",)) and not _within(name, ("connectors.sandbox",))
            and name != "connectors"]


# -- the tests -------------------------------------------------------------------------------

def test_the_graph_sees_imports_of_every_kind() -> None:
    modules = project()
    # a relative import inside the sandbox, a plain top-level import, and jobs' wiring
    assert "connectors.sandbox.salesforce.side" in modules["connectors.sandbox.salesforce"].imports
    assert "billing_core.adapters.db" in modules["billing_core.service"].imports
    assert "jobs.worker" in modules["jobs.daemon"].imports


def test_no_import_cycle_between_project_files() -> None:
    assert cycles(project()) == []


def test_billing_core_imports_nothing_of_the_outer_layers() -> None:
    assert list(forbidden(project(), "billing_core",
                          ("config", "connectors", "sync", "jobs"))) == []


def test_connectors_import_nothing_of_billing_sync_jobs_or_config() -> None:
    assert list(forbidden(project(), "connectors",
                          ("billing_core", "sync", "jobs", "config"))) == []


def test_the_engine_imports_nothing_of_the_wiring_and_the_api_nothing_of_the_cli() -> None:
    assert list(forbidden(project(), "sync", ("jobs",))) == []
    assert list(forbidden(project(), "jobs.api", ("jobs.cli",))) == []


def test_the_sandbox_crm_imports_nothing_outside_itself() -> None:
    modules = project()
    outside = [p for p in PACKAGES if p != "connectors"] + _connectors_outside_sandbox(modules)
    assert list(forbidden(modules, "connectors.sandbox", outside)) == []


def test_sync_and_jobs_never_name_billings_tables() -> None:
    assert tables_rule() == []


def test_no_project_import_is_guarded_by_except_import_error() -> None:
    assert guarded_imports(project()) == []


if __name__ == "__main__":
    print(report())
