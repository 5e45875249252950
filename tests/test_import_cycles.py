"""No import cycles between omni_core's modules, read statically from the source (nothing is imported).

What counts as module A importing module B:
- every ``import`` / ``from ... import`` in A, at module level and inside functions (a function-level import
  is a cycle deferred, not avoided), except under ``if TYPE_CHECKING:``, which never runs;
- ``from pkg import name`` points at ``pkg.name`` when that is a submodule, else at ``pkg``;
- a package's ``__init__`` that an import runs on the way to a submodule is no edge: a parent importing
  its child is no cycle with the child importing a sibling;
- a name a package re-exports lazily (PEP 562 ``__getattr__``, from a ``{name: submodule}`` table or an
  import inside ``__getattr__``) loads only when used: importing it points at the submodule that holds it,
  and the package's ``__getattr__`` adds no edge of its own;
- a module that calls ``importlib.import_module`` imports every module a string constant of it names in
  full (``"omni_core.x.y"``, or ``"omni_core.x.y:function"``, a registry entry).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "omni_core"


def _module_files(package_dir: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(tree: ast.AST):
    """Every node with whether it sits inside a ``__getattr__``, leaving out ``if TYPE_CHECKING:`` blocks."""
    def walk(node: ast.AST, in_getattr: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    yield sub, in_getattr
                    yield from walk(sub, in_getattr)
                continue
            yield child, in_getattr
            getattr_def = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.name == "__getattr__"
            yield from walk(child, in_getattr or getattr_def)
    yield from walk(tree, False)


def _base(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module a ``from`` import reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _owner(name: str, modules: set[str]) -> str | None:
    """The longest prefix of dotted ``name`` that is one of the package's modules (None: another package)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def _lazy_exports(package: str, tree: ast.Module, modules: set[str]) -> dict[str, str]:
    """Names ``package`` re-exports through a module-level ``__getattr__``: name -> the submodule holding it."""
    if not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
        return {}
    out = {}
    for node in tree.body:         # a {name: "submodule"} table (relative, or the full dotted name)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            for k, v in zip(node.value.keys, node.value.values):
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant) and isinstance(v.value, str):
                    target = next((m for m in (f"{package}.{v.value}", v.value) if m in modules), None)
                    if target is not None:
                        out[k.value] = target
    for node, in_getattr in _nodes(tree):       # imports inside __getattr__: from .runner import evaluate
        if in_getattr and isinstance(node, ast.ImportFrom):
            target = _owner(_base(package, node, True), modules)
            if target is not None:
                out.update({alias.name: target for alias in node.names})
    return out


def _calls_import_module(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and (getattr(n.func, "attr", None) == "import_module"
                                            or getattr(n.func, "id", None) == "import_module")
               for n in ast.walk(tree))


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (the module docstring says what counts)."""
    files = _module_files(package_dir)
    modules = set(files)
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in files.items()}
    packages = {m for m, p in files.items() if p.name == "__init__.py"}
    lazy = {m: _lazy_exports(m, trees[m], modules) for m in packages}
    named = re.compile(rf"^({re.escape(package_dir.name)}(\.\w+)+)(:\w+)?$")
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, tree in trees.items():
        dynamic = _calls_import_module(tree) and not lazy.get(module)
        for node, in_getattr in _nodes(tree):
            if in_getattr and lazy.get(module):
                continue                                  # runs only when a lazily exported name is used
            if isinstance(node, ast.Import):
                targets = [_owner(alias.name, modules) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, node, module in packages)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                           else lazy.get(base, {}).get(alias.name) or _owner(base, modules) for alias in node.names]
            elif dynamic and isinstance(node, ast.Constant) and isinstance(node.value, str) and named.match(node.value):
                targets = [_owner(named.match(node.value).group(1), modules)]
            else:
                continue
            graph[module].update(t for t in targets if t is not None and t != module)
    return graph


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted: every module of one reaches
    every other, so each lies on a cycle (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:          # recursion depth <= the number of modules, a few dozen
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest import path ``start -> ... -> start`` (breadth first), or [] when start is on no cycle."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    return root / "pkg"


def test_the_reader_sees_every_kind_of_import(tmp_path):
    """On a made-up package: which imports are edges, and which are not."""
    package = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.config import load\n",                             # parent -> child: an edge
        "pkg/config.py": "import json\n",
        "pkg/lazy/__init__.py": ("import importlib\n_WHERE = {'build': 'heavy'}\n"
                                 "def __getattr__(name):\n"
                                 "    if name == 'evaluate':\n        from .runner import evaluate\n"
                                 "        return evaluate\n"
                                 "    return getattr(importlib.import_module(f'{__name__}.{_WHERE[name]}'), name)\n"),
        "pkg/lazy/heavy.py": "from ..config import load\ndef build(): pass\n",               # relative import
        "pkg/lazy/runner.py": "def evaluate():\n    from pkg.lazy import build\n",          # function level + lazy
        "pkg/lazy/typed.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.lazy import runner\n"
                              "else:\n    from pkg import lazy\n"),
        "pkg/registry.py": ("import importlib\nPLUGINS = {'a': 'pkg.plugin:make'}\n"
                            "def load(k):\n    return importlib.import_module(PLUGINS[k].split(':')[0])\n"),
        "pkg/plugin.py": "from pkg import registry\n",                                      # pkg.registry: a module
    })
    graph = import_graph(package)
    assert graph == {
        "pkg": {"pkg.config"}, "pkg.config": set(), "pkg.lazy": set(), "pkg.lazy.heavy": {"pkg.config"},
        "pkg.lazy.runner": {"pkg.lazy.heavy"}, "pkg.lazy.typed": {"pkg.lazy"},
        "pkg.registry": {"pkg.plugin"}, "pkg.plugin": {"pkg.registry"}}
    assert components(graph) == [["pkg.plugin", "pkg.registry"]]


def test_a_cycle_is_spelled_out_from_each_module_on_it():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}
    assert components(graph) == [["a", "b", "c"]]
    assert shortest_cycle(graph, "a") == ["a", "b", "a"] and shortest_cycle(graph, "c") == ["c", "a", "b", "c"]
    assert shortest_cycle(graph, "d") == [] and components({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    found = components(graph)
    if found:
        lines = []
        for component in found:
            lines.append(f"  {', '.join(component)}:")
            lines += [f"    {' -> '.join(shortest_cycle({m: graph[m] & set(component) for m in component}, m))}"
                      for m in component]
        pytest.fail("import cycles between omni_core modules (in each group every module imports every other, "
                    "directly or not; move what two of them share into a module both can import):\n"
                    + "\n".join(lines))
