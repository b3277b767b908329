"""The package's layering, read from the source with ``ast`` (nothing is imported): which module may
import which (docs/design.md, "Module contracts"). Imports inside functions count too, except for the
module-level cycle check, which is about what runs at import time.

The layers themselves (cli -> bench -> api -> ... -> config/io), "nothing imports cli" and "no cycles" are
import-linter contracts in ``.importlinter`` at the repository root; the last tests run them."""

from __future__ import annotations

import ast
import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "alisnet_export"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(root: Path = ROOT) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.Module, *, top_level_only: bool) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # never runs
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            elif top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            else:
                visit(child)

    visit(tree)
    return found


def imports_of(module: str, path: Path, modules: set[str], *, top_level_only: bool = False) -> set[str]:
    """The package modules ``module`` imports (``from . import x`` counts as ``pkg.x`` when that is a module)."""
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in _import_nodes(tree, top_level_only=top_level_only):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base_parts = here.split(".")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            # the longest package module that ``t`` names (``pkg.a.b.func`` -> ``pkg.a.b``)
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != module:
                out.add(t)
    return out


def import_graph(root: Path = ROOT, *, top_level_only: bool = False) -> dict[str, set[str]]:
    sources = _sources(root)
    modules = set(sources)
    return {m: imports_of(m, p, modules, top_level_only=top_level_only) for m, p in sources.items()}


def find_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """One import cycle through ``start``, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return trail + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, trail + [nxt]))
    return None


# -- the rules ------------------------------------------------------------------------------------
LEAVES = {  # module -> the only package modules it may import (at all, lazily included)
    f"{PACKAGE}.errors": set(),
    f"{PACKAGE}._io": {f"{PACKAGE}.errors"},
}
FORBIDDEN = [  # (importer, imported): never, not even inside a function
    (f"{PACKAGE}.config", f"{PACKAGE}.zoo"),
    (f"{PACKAGE}.config", f"{PACKAGE}.checkpoint"),
    (f"{PACKAGE}.zoo", f"{PACKAGE}.checkpoint"),
]
#: modules that must not sit on a module-level import cycle
ACYCLIC = [f"{PACKAGE}.{m}" for m in ("errors", "_io", "config", "zoo", "checkpoint", "manifest", "pipeline",
                                       "bundle.build", "bench.runner", "verify.recheck", "preprocess", "modeling.point_rend")]


def layering_violations(graph: dict[str, set[str]], top_level: dict[str, set[str]]) -> list[str]:
    problems = []
    for leaf, allowed in LEAVES.items():
        extra = graph.get(leaf, set()) - allowed
        if extra:
            problems.append(f"{leaf} must import nothing from the package but {sorted(allowed) or 'nothing'}; "
                            f"it imports {sorted(extra)}")
    cli = f"{PACKAGE}.cli"
    for importer, imported in graph.items():
        if importer == cli or importer.startswith(cli + ".") or importer == f"{PACKAGE}.__main__":
            continue
        bad = sorted(m for m in imported if m == cli or m.startswith(cli + "."))
        if bad:
            problems.append(f"{importer} imports the command line ({', '.join(bad)}); only {cli}.* and __main__ may")
    for importer, imported in FORBIDDEN:
        if imported in graph.get(importer, set()):
            problems.append(f"{importer} must not import {imported}")
    for module in ACYCLIC:
        cycle = find_cycle(top_level, module)
        if cycle:
            problems.append(f"import cycle: {' -> '.join(cycle)}")
    return problems


def test_the_package_keeps_its_layers():
    graph, top_level = import_graph(), import_graph(top_level_only=True)
    assert f"{PACKAGE}._io" in graph and f"{PACKAGE}.cli" in graph  # the walk found the package
    assert layering_violations(graph, top_level) == []


@pytest.mark.parametrize("module, line, expect", [
    ("_io.py", "from .checkpoint import load_checkpoint", "_io must import nothing"),
    ("_io.py", "def f():\n    from . import config\n", "_io must import nothing"),
    ("bench/runner.py", "from ..cli import main", "bench.runner imports the command line"),
    ("pipeline.py", "def f():\n    from .cli._common import Reporter\n", "pipeline imports the command line"),
    ("config.py", "from . import zoo", "config must not import alisnet_export.zoo"),
    ("config.py", "from .zoo import default_checkpoint", "import cycle"),
])
def test_an_added_import_is_caught(tmp_path, module, line, expect):
    """The check is real: a copy of the package with one bad import added fails it."""
    import shutil

    copy = tmp_path / PACKAGE
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "resources", "schemas"))
    target = copy / module
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    problems = layering_violations(import_graph(copy), import_graph(copy, top_level_only=True))
    assert any(expect in p for p in problems), problems


# -- import-linter: the contracts in .importlinter ------------------------------------------------
CONTRACTS = ROOT.parent / ".importlinter"


def contract_ids(config: Path = CONTRACTS) -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(config, encoding="utf-8")
    return [s.split(":", 2)[2] for s in parser.sections() if s.startswith("importlinter:contract:")]


def lint_imports(root: Path, *contracts: str) -> tuple[int, str]:
    """import-linter's ``lint-imports`` with the repository's contracts, on the ``alisnet_export`` under ``root``
    (it puts its working directory first on ``sys.path``). Returns its exit code and its report."""
    cmd = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
           str(CONTRACTS), "--no-cache", "--no-logo", *(arg for c in contracts for arg in ("--contract", c))]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})  # no line wrapping in the report
    return proc.returncode, proc.stdout + proc.stderr


def test_the_contracts_are_the_expected_ones():
    assert contract_ids() == ["layers", "cli-on-top", "acyclic"]


@pytest.mark.parametrize("contract", contract_ids())
def test_import_linter_contract_is_kept(contract):
    """Fails with import-linter's report, which names every import that breaks the contract and its line."""
    code, report = lint_imports(ROOT.parent, contract)
    assert code == 0, f"import-linter contract {contract!r} ({CONTRACTS.name}) is broken:\n{report}"


@pytest.mark.parametrize("module, line, contract, expect", [
    ("bench/runner.py", "from ..cli import main", "cli-on-top", "alisnet_export.bench.runner -> alisnet_export.cli"),
    ("data/testbed.py", "def f():\n    from ..cli import _common\n", "cli-on-top",
     "alisnet_export.data.testbed -> alisnet_export.cli._common"),
    ("exporters/base.py", "def f():\n    from .. import api\n", "layers",
     "alisnet_export.exporters is not allowed to import alisnet_export.api"),
    ("config.py", "from . import zoo", "layers", "alisnet_export.config is not allowed to import alisnet_export.zoo"),
    ("zoo.py", "def f():\n    from . import checkpoint\n", "layers",
     "alisnet_export.zoo is not allowed to import alisnet_export.checkpoint"),
    ("stray.py", "X = 1", "layers", "not listed as layers: - alisnet_export.stray"),
    ("modeling/heads.py", "def f():\n    from . import alisnet\n", "acyclic",
     "No cycles are allowed in alisnet_export.modeling."),
])
def test_import_linter_catches_an_added_import(tmp_path, module, line, contract, expect):
    """The contracts are real: a copy of the package with one bad import (or an unplaced module) added breaks
    the contract with a report that names it."""
    import shutil

    copy = tmp_path / PACKAGE
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "resources", "schemas"))
    target = copy / module
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(before + "\n" + line + "\n", encoding="utf-8")
    code, report = lint_imports(tmp_path, contract)
    assert code != 0 and expect in re.sub(r"\s+", " ", report), report
