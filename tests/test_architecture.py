"""The shape of the package, read from its source: no import cycle (between modules, nor between the
folders of docs/architecture.md), production code never imports test scaffolding, no module borrows
another's private names, the shared leaves import nothing above them, no function is longer than
``MAX_FUNCTION_LINES`` (declarative tables excepted, listed here and in docs/architecture.md) and the
pipeline's ``__call__`` reads as diffusers' numbered steps.

Every import counts, also one inside a function (a lazy import is still a dependency). The checks
run on the source text, so they see what a reviewer sees; ``test_the_checks_find_what_they_look_for``
shows that each of them fails on a small package that breaks its rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "jointdiff"
SCAFFOLDING = f"{PACKAGE}.testing"
LEAVES = f"{PACKAGE}.common"
# The folders of docs/architecture.md, bottom row first: a folder imports only folders of lower rows.
LAYERS = (
    ("common",),
    ("data", "jedi"),
    ("evaluation", "miniature"),
    ("training",),
    ("dreamblend",),
    ("app",),
    ("cli",),
    ("testing",),  # scaffolding may drive the command line (testing/probe.py runs it under accelerate launch)
    (PACKAGE, "__main__"),  # the package's own __init__ (public names of jedi) and `python -m jointdiff`
)
# A function's length: its lines from ``def`` to its end, the docstring not counted (it documents, it does not do).
MAX_FUNCTION_LINES = 80
# Functions that are one declarative table (a recipe's parts as data), longer than the limit by nature; each is
# listed in docs/architecture.md ("Long functions"). Anything else over the limit is split by concept.
DECLARATIVE_TABLES = {
    "jointdiff.data.toyworld.recipes.unusual.quadruped": "a recipe: a dog's or a cat's parts",
}
PIPELINE = SRC / PACKAGE / "jedi" / "pipeline.py"
MAX_CALL_LINES = 60  # the pipeline's __call__ body (after its docstring): sec. 3.3 in numbered steps


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` under ``src``."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(src: Path, package: str) -> dict[str, list[tuple[str, str, int]]]:
    """Per module, every import of a module of ``package``: (imported module, name taken or "", line)."""
    known = modules(src, package)
    edges: dict[str, list[tuple[str, str, int]]] = {}
    for name, path in known.items():
        found = []
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == package]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package of this module, `level` steps up
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                if base.split(".")[0] != package:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.append((sub, "", node.lineno) if sub in known else (base, alias.name, node.lineno))
        edges[name] = [(target, taken, line) for target, taken, line in found if target != name]
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a path that returns to its start, or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def module_graph(edges: dict[str, list[tuple[str, str, int]]]) -> dict[str, set[str]]:
    return {m: {t for t, _, _ in targets} for m, targets in edges.items()}


def folder(module: str, package: str) -> str:
    """The folder (concept) of a module: ``jointdiff.jedi.model`` -> ``jedi``; the package's own files -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else package


def folder_graph(edges: dict[str, list[tuple[str, str, int]]], package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for m, targets in edges.items():
        a = folder(m, package)
        graph.setdefault(a, set()).update(b for t, _, _ in targets if (b := folder(t, package)) != a)
    return graph


def scaffolding_imports(edges: dict[str, list[tuple[str, str, int]]], scaffolding: str) -> list[str]:
    """``module:line -> target`` for every import of test scaffolding outside the scaffolding itself."""
    inside = lambda m: m == scaffolding or m.startswith(scaffolding + ".")  # noqa: E731
    return [f"{m}:{line} -> {t}" for m, ts in edges.items() if not inside(m) for t, _, line in ts if inside(t)]


def private_imports(edges: dict[str, list[tuple[str, str, int]]]) -> list[str]:
    """``module:line -> target.name`` for every private name (``_x``, not ``__x__``) taken from another module."""
    return [
        f"{m}:{line} -> {t}.{name}"
        for m, ts in edges.items()
        for t, name, line in ts
        if name.startswith("_") and not name.startswith("__")
    ]


def leaf_imports(edges: dict[str, list[tuple[str, str, int]]], leaves: str) -> list[str]:
    """``module:line -> target`` for every import from the shared leaves of anything that is not a leaf."""
    return [
        f"{m}:{line} -> {t}"
        for m, ts in edges.items()
        if m.startswith(leaves)
        for t, _, line in ts
        if not t.startswith(leaves)
    ]


def function_lengths(src: Path, package: str) -> dict[str, int]:
    """``module.Class.function`` -> its length in lines, the docstring not counted, for every function and method
    (nested ones included) of ``package``."""
    lengths = {}
    for name, path in modules(src, package).items():

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = child.body[0] if ast.get_docstring(child) is not None else None
                    docstring = doc.end_lineno - doc.lineno + 1 if doc is not None else 0
                    lengths[f"{prefix}.{child.name}"] = child.end_lineno - child.lineno + 1 - docstring
                    visit(child, f"{prefix}.{child.name}")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}.{child.name}")

        visit(ast.parse(path.read_text(), str(path)), name)
    return lengths


def long_functions(src: Path, package: str, limit: int, allowed: set[str] | dict[str, str]) -> list[str]:
    """``name (lines)`` of every function over ``limit`` lines that is not ``allowed``."""
    return [f"{f} ({n})" for f, n in function_lengths(src, package).items() if n > limit and f not in allowed]


@pytest.fixture(scope="module")
def edges() -> dict[str, list[tuple[str, str, int]]]:
    return imports(SRC, PACKAGE)


def test_no_import_cycle_between_modules(edges):
    cycle = find_cycle(module_graph(edges))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_folders_depend_on_each_other_in_one_direction(edges):
    cycle = find_cycle(folder_graph(edges, PACKAGE))
    assert not cycle, "folders import each other in a circle: " + " -> ".join(cycle)


def test_folders_import_only_the_rows_below_them(edges):
    row = {name: i for i, names in enumerate(LAYERS) for name in names}
    graph = folder_graph(edges, PACKAGE)
    assert set(graph) == set(row), "a folder is missing from LAYERS (and from docs/architecture.md)"
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if row[b] >= row[a]]
    assert not upward, f"imports that do not go down the rows of docs/architecture.md: {upward}"


def test_production_code_never_imports_test_scaffolding(edges):
    assert not scaffolding_imports(edges, SCAFFOLDING)


def test_no_module_imports_another_modules_private_names(edges):
    assert not private_imports(edges)


def test_shared_leaves_import_nothing_above_them(edges):
    assert not leaf_imports(edges, LEAVES)


def test_no_function_is_longer_than_the_limit_except_declarative_tables():
    assert not long_functions(SRC, PACKAGE, MAX_FUNCTION_LINES, DECLARATIVE_TABLES), (
        f"functions over {MAX_FUNCTION_LINES} lines: split them by concept (or, for a declarative table, list it in "
        "DECLARATIVE_TABLES and docs/architecture.md)"
    )
    lengths = function_lengths(SRC, PACKAGE)
    assert set(DECLARATIVE_TABLES) <= set(lengths), "a declarative table listed here no longer exists"
    docs = (SRC.parent / "docs" / "architecture.md").read_text()
    assert all(f"`{name.removeprefix(PACKAGE + '.')}`" in docs for name in DECLARATIVE_TABLES), (
        "docs/architecture.md must list every declarative table"
    )


def test_the_pipeline_call_reads_as_numbered_steps():
    """diffusers' shape: ``__call__`` is a short sequence of numbered steps, the work in named methods."""
    tree = ast.parse(PIPELINE.read_text())
    (call,) = [
        f
        for c in tree.body
        if isinstance(c, ast.ClassDef) and c.name == "JointDiffusionPipeline"
        for f in c.body
        if isinstance(f, ast.FunctionDef) and f.name == "__call__"
    ]
    first = call.body[1]  # after the docstring
    assert call.end_lineno - first.lineno + 1 <= MAX_CALL_LINES
    lines = PIPELINE.read_text().splitlines()[first.lineno - 1 : call.end_lineno]
    steps = [int(m[1]) for line in lines if (m := re.match(r"\s*# (\d+)\. ", line))]
    assert steps == list(range(steps[0], steps[0] + len(steps))) and len(steps) >= 6, steps


def cli_imports(folder: Path, package: str) -> list[str]:
    """``file:line`` of every import of ``package.cli`` (or of ``main`` from ``package``'s CLI) in ``folder``'s
    scripts: benchmarks use the library, or run the ``jointdiff`` command as a subprocess."""
    cli = f"{package}.cli"
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == cli or n.startswith(cli + ".") for n in names):
                found.append(f"{path.relative_to(folder)}:{node.lineno}")
    return found


def test_benchmarks_import_nothing_from_the_command_line():
    assert not cli_imports(SRC.parent / "benchmarks", PACKAGE)


def test_the_checks_find_what_they_look_for(tmp_path):
    """A small package that breaks every rule once: each check reports exactly that."""
    pkg = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "common/__init__.py": "",
        "common/paths.py": "from pkg.core import engine\n",  # a leaf that reaches up
        "common/units.py": "",
        "core/__init__.py": "",
        "core/engine.py": "from pkg.core.wheel import turn\n",
        "core/gear.py": "from pkg.common import units\n",  # with common/paths.py: two folders in a circle
        "core/wheel.py": "def turn():\n    from pkg.core import engine  # lazy, still a cycle\n",
        "app/__init__.py": "",
        "app/main.py": "from pkg.core.engine import _secret\nfrom pkg.testing import fake\n",
        "testing/__init__.py": "from pkg.core import engine\n",
        "testing/fake.py": "",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = imports(tmp_path, "pkg")
    assert find_cycle(module_graph(found)) == ["pkg.core.engine", "pkg.core.wheel", "pkg.core.engine"]
    assert find_cycle(folder_graph(found, "pkg")) == ["core", "common", "core"]
    assert scaffolding_imports(found, "pkg.testing") == ["pkg.app.main:2 -> pkg.testing.fake"]
    assert private_imports(found) == ["pkg.app.main:1 -> pkg.core.engine._secret"]
    assert leaf_imports(found, "pkg.common") == ["pkg.common.paths:1 -> pkg.core.engine"]
    body = "".join(f"    x{i} = {i}\n" for i in range(5))
    method = body.replace("    ", "        ")
    (pkg / "core" / "gear.py").write_text(
        f'class Gear:\n    def spin(self):\n        """Spins.\n\n        Long docs.\n        """\n{method}'
        f'def table():\n{body}def short():\n    """Docs."""\n    return 1\n'
    )
    scripts = tmp_path / "benchmarks"
    scripts.mkdir()
    (scripts / "a.py").write_text("import pkg.cli.demo\nimport pkg.client\n")
    (scripts / "b.py").write_text("def f():\n    from pkg import cli\n    from pkg.common import paths\n")
    (scripts / "c.py").write_text('import subprocess\nsubprocess.run(["python", "-m", "pkg.cli"])\n')
    assert cli_imports(scripts, "pkg") == ["a.py:1", "b.py:2"]
    assert function_lengths(tmp_path, "pkg")["pkg.core.gear.Gear.spin"] == 1 + 5  # the docstring is not counted
    assert long_functions(tmp_path, "pkg", 5, {"pkg.core.gear.table"}) == ["pkg.core.gear.Gear.spin (6)"]
    (pkg / "core" / "wheel.py").write_text("def turn():\n    pass\n")
    (pkg / "common" / "paths.py").write_text("from pkg.common import units\n")
    clean = imports(tmp_path, "pkg")
    assert find_cycle(module_graph(clean)) == [] and find_cycle(folder_graph(clean, "pkg")) == []
