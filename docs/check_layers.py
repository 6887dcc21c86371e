"""Check the package's shape (docs/architecture.md): run ``python docs/check_layers.py`` from anywhere.

Fails (exit status 1, each offender listed) on:

(a) an import cycle among the modules of ``adaptive_retrieval``: every ``import`` / ``from ... import``
    that names a module of the package counts, at module level or inside a function, class or ``if``
    (``TYPE_CHECKING`` included). ``from pkg import name`` is an import of ``pkg.name`` when that is a
    module, else of ``pkg`` (its ``__init__``). A parent package that Python runs first on the way to a
    submodule is not counted: the edges are the imports the code writes;
(b) a module of the package over 600 lines, or a class over 400 lines (Retriever: 350);
(c) an edit of ``sys.path`` (or pytest's ``monkeypatch.syspath_prepend``) in any ``.py`` file of the
    repository (``.venv`` and hidden folders aside);
(d) a private name of the package (one starting with ``_``, dunders aside) used by ``evals/``,
    ``benchmarks/`` or ``training/``: ``from adaptive_retrieval.x import _y``, ``import
    adaptive_retrieval._x``, or an attribute ``obj._x`` on anything that is not a third-party module
    (``torch._C`` is torch's business) nor one of a named tuple's public ``_asdict``-style methods.

Reads the files only (``ast``); imports nothing of the package.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "adaptive_retrieval"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
#: Classes held to a tighter limit: the façade stays thin.
CLASS_LIMITS = {"Retriever": 350}
SCRIPT_DIRS = ("evals", "benchmarks", "training")
SKIP_DIRS = {"__pycache__", "build", "dist", "node_modules"}  # besides hidden folders (.venv, .git, ...)
#: named tuples' public methods and fields, spelled with a leading underscore
NAMEDTUPLE_API = {"_asdict", "_replace", "_fields", "_make", "_field_defaults"}
SYS_PATH_METHODS = {"append", "insert", "extend", "remove", "pop", "clear", "reverse", "sort", "__setitem__"}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def python_files(top: Path) -> Iterator[Path]:
    """Every ``.py`` under ``top``, skipping hidden folders (``.venv``, ``.git``, caches) and build output."""
    for path in sorted(top.rglob("*.py")):
        parts = path.relative_to(ROOT).parts[:-1]
        if any(p.startswith(".") or p in SKIP_DIRS or p.endswith(".egg-info") for p in parts):
            continue
        yield path


def parse(path: Path, problems: list[str]) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as err:
        problems.append(f"{rel(path)}: cannot be parsed ({err})")
        return None


# ------------------------------------------------------------------------------------- (a) cycles


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(name: str, path: Path, tree: ast.Module, modules: set[str]) -> Iterator[tuple[str, int]]:
    """``(module of the package, line)`` for each import in ``tree`` (at any depth) of a package module."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    target = alias.name
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == PACKAGE or source.startswith(PACKAGE + ".")):
                continue
            for alias in node.names:
                target = f"{source}.{alias.name}"
                yield (target if target in modules else source), node.lineno


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def one_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest circle through the component's first module, as a list of modules (first repeated last)."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return paths[v] + [start]
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return [start, start]


def check_cycles(trees: dict[str, tuple[Path, ast.Module]]) -> list[str]:
    modules = set(trees)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for name, (path, tree) in trees.items():
        for target, line in imported_modules(name, path, tree, modules):
            graph[name].setdefault(target, line)
    problems = []
    for component in find_cycles(graph):
        circle = one_cycle(graph, component)
        steps = ", ".join(
            f"{a} -> {b} ({rel(trees[a][0])}:{graph[a][b]})" for a, b in itertools.pairwise(circle)
        )
        problems.append(f"import cycle among {', '.join(component)}: {steps}")
    return problems


# -------------------------------------------------------------------------------------- (b) sizes


def check_sizes(trees: dict[str, tuple[Path, ast.Module]]) -> list[str]:
    problems = []
    for _, (path, tree) in sorted(trees.items()):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            problems.append(f"{rel(path)}: module of {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = (node.end_lineno or node.lineno) - first + 1
                limit = CLASS_LIMITS.get(node.name, MAX_CLASS_LINES)
                if length > limit:
                    problems.append(
                        f"{rel(path)}:{node.lineno}: class {node.name} of {length} lines (at most {limit})"
                    )
    return problems


# ------------------------------------------------------------------------------------ (c) sys.path


def sys_aliases(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to the ``sys`` module, and names bound to ``sys.path`` itself (``from sys import path``)."""
    modules, paths = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sys":
                    modules.add(alias.asname or "sys")
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and not node.level:
            for alias in node.names:
                if alias.name == "path":
                    paths.add(alias.asname or "path")
    return modules, paths


def is_sys_path(node: ast.AST, modules: set[str], paths: set[str]) -> bool:
    """Whether ``node`` is ``sys.path`` (``modules``: names of ``sys``; ``paths``: names of ``sys.path``)."""
    if isinstance(node, ast.Attribute) and node.attr == "path":
        return isinstance(node.value, ast.Name) and node.value.id in modules
    return isinstance(node, ast.Name) and node.id in paths


def check_sys_path(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        tree = parse(path, problems)
        if tree is None:
            continue
        modules, paths = sys_aliases(tree)
        if not modules and not paths:
            continue

        def edited(target: ast.AST, modules: set[str] = modules, paths: set[str] = paths) -> bool:
            if isinstance(target, ast.Subscript):
                target = target.value
            return is_sys_path(target, modules, paths)

        for node in ast.walk(tree):
            hit = False
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                hit = node.func.attr in SYS_PATH_METHODS and is_sys_path(node.func.value, modules, paths)
                hit = hit or node.func.attr == "syspath_prepend"  # pytest's monkeypatch edits it too
            elif isinstance(node, ast.Assign):
                hit = any(edited(t) for t in node.targets)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                hit = edited(node.target)
            elif isinstance(node, ast.Delete):
                hit = any(edited(t) for t in node.targets)
            if hit:
                problems.append(f"{rel(path)}:{node.lineno}: edits sys.path ({ast.unparse(node)[:80]})")
    return problems


# ----------------------------------------------------------------------------- (d) private names


def private(name: str) -> bool:
    return name.startswith("_") and name != "_" and not (name.startswith("__") and name.endswith("__"))


def third_party_modules(tree: ast.Module) -> set[str]:
    """Names bound by ``import x`` / ``import x as y`` of modules outside the package (and outside the
    repository's own script packages): their private attributes are not the package's."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top != PACKAGE and top not in SCRIPT_DIRS and top != "tests":
                    names.add(alias.asname or top)
    return names


def root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def check_private(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        tree = parse(path, problems)
        if tree is None:
            continue
        foreign = third_party_modules(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if node.module == PACKAGE or node.module.startswith(PACKAGE + "."):
                    for part in node.module.split("."):
                        if private(part):
                            problems.append(
                                f"{rel(path)}:{node.lineno}: imports private module {node.module}"
                            )
                    for alias in node.names:
                        if private(alias.name):
                            problems.append(
                                f"{rel(path)}:{node.lineno}: from {node.module} import {alias.name} (private)"
                            )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE and any(private(p) for p in alias.name.split(".")):
                        problems.append(f"{rel(path)}:{node.lineno}: imports private module {alias.name}")
            elif isinstance(node, ast.Attribute) and private(node.attr):
                if node.attr in NAMEDTUPLE_API or root_name(node.value) in foreign:
                    continue
                problems.append(f"{rel(path)}:{node.lineno}: uses private attribute {ast.unparse(node)[:80]}")
    return problems


# ------------------------------------------------------------------------------------------- main


def by_place(line: str) -> tuple[str, int, str]:
    """Sort key of an offender's line: its file, then its line number."""
    place = line.split(" ", 1)[0].rstrip(":").split(":")
    number = int(place[1]) if len(place) > 1 and place[1].isdigit() else 0
    return place[0], number, line


def main() -> int:
    problems: list[str] = []
    trees: dict[str, tuple[Path, ast.Module]] = {}
    for path in python_files(ROOT / PACKAGE):
        tree = parse(path, problems)
        if tree is not None:
            trees[module_name(path)] = (path, tree)
    checks = [
        ("(a) import cycles in the package", check_cycles(trees)),
        ("(b) modules over 600 lines, classes over 400", check_sizes(trees)),
        ("(c) sys.path edits in the repository", check_sys_path(list(python_files(ROOT)))),
        (
            "(d) private names of the package used by " + ", ".join(f"{d}/" for d in SCRIPT_DIRS),
            check_private([p for d in SCRIPT_DIRS for p in python_files(ROOT / d)]),
        ),
    ]
    print(f"check_layers: {len(trees)} modules in {PACKAGE}/")
    for title, found in checks:
        print(f"{title}: {'none' if not found else len(found)}")
        for line in sorted(found, key=by_place):
            print(f"  {line}")
    failed = list(dict.fromkeys(problems + [line for _, found in checks for line in found]))
    if problems:
        print("files that cannot be parsed:")
        for line in problems:
            print(f"  {line}")
    if failed:
        print(f"check_layers: FAILED ({len(failed)} offenders)", file=sys.stderr)
        return 1
    print("check_layers: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
