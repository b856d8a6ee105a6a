"""The package's layering, read from the source (AST): who may import whom.

Every module of ``monai_softcam/`` and of the Slicer extension (``SoftCAMLib/`` and ``SoftCAM.py``)
is given a layer in :data:`LAYERS`; docs/architecture.md explains the table. The rules:

* **layers**: a module imports project modules of its own layer or lower ones only. Imports inside
  functions count too. A subpackage's ``__init__`` is in its subpackage's layer; the package's own
  ``monai_softcam/__init__.py`` is an aggregator on the package's top layer (it may import anything
  in the package, and only the Slicer extension may import it).
* **no cycles** between project modules, counting function-local imports (so no cycle hides in one)
  and the implicit import of a package's ``__init__`` when one of its modules is imported.
* **function-local imports** are for optional or heavy third-party dependencies only, each with a
  comment on the same line saying why (``# optional: captum``, ``# heavy: matplotlib``); a project
  module is imported at the top of the module. For the Slicer extension, ``monai_softcam`` (and
  its dependencies) are optional: Slicer installs them on first use, so the extension imports them
  inside functions, with such a comment.
"""

from __future__ import annotations

import ast
import io
import os
import re
import sys
import tokenize
from dataclasses import dataclass

from conftest import REPO_ROOT

# (directory or file relative to the repository, the module name it is imported as)
SOURCES = [
    ("monai_softcam", "monai_softcam"),
    ("slicer_extension/SoftCAM/SoftCAMLib", "SoftCAMLib"),
    ("slicer_extension/SoftCAM/SoftCAM.py", "SoftCAM"),
]
PACKAGE = "monai_softcam"
SLICER = ("SoftCAMLib", "SoftCAM")

# Bottom to top. An entry covers the module and, for a subpackage, every module under it.
LAYERS = {
    "monai_softcam.utils": 0,
    "monai_softcam.checkpoint": 0,
    "monai_softcam.text": 0,
    "monai_softcam.folders": 0,
    "monai_softcam.networks": 1,
    "monai_softcam.losses": 2,
    "monai_softcam.optim": 2,
    "monai_softcam.data": 2,
    "monai_softcam.visualize": 2,
    "monai_softcam.regions": 2,
    "monai_softcam.guidance": 2,
    "monai_softcam.transforms": 3,
    "monai_softcam.inferers": 3,
    "monai_softcam.metrics": 4,
    "monai_softcam.explain": 5,
    "monai_softcam.handlers": 5,
    "monai_softcam.export": 5,
    "monai_softcam.explanation_report": 6,
    "monai_softcam.bundle": 6,
    "monai_softcam.task": 6,
    "monai_softcam.package": 6,
    "monai_softcam.slicer_index": 6,
    "monai_softcam.tune": 6,
    "monai_softcam.settings": 6,
    "monai_softcam.comparison": 6,
    "monai_softcam.__main__": 6,
    "monai_softcam": 6,  # the package's __init__: an aggregator on the top layer of the package
    "SoftCAMLib": 7,
    "SoftCAM": 7,
}
# comments that are tool directives, not a reason
_DIRECTIVE = re.compile(r"^\s*(noqa\b.*|type:\s*ignore\b.*|pragma\b.*|fmt:\s*\w+|isort:\s*\w+|pylint:.*)$", re.I)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    path: str  # its file, relative to the repository
    line: int
    text: str  # the statement as written (one line)
    targets: tuple[str, ...]  # absolute names of the modules it imports (project or not)
    local: bool  # inside a function
    comment: str  # the comment on the statement's line(s), tool directives removed


def _modules() -> dict[str, tuple[str, bool]]:
    """Module name -> (file relative to the repository, is a package ``__init__``)."""
    found: dict[str, tuple[str, bool]] = {}
    for rel, name in SOURCES:
        full = os.path.join(REPO_ROOT, rel)
        if os.path.isfile(full):
            found[name] = (rel, False)
            continue
        for folder, dirs, files in os.walk(full):
            # templates/: package data (the Zoo's unit test of a packaged bundle), not modules of the package
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "templates") and not d.startswith("."))
            for file in sorted(files):
                if not file.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(folder, file), full)[: -len(".py")].split(os.sep)
                package = parts[-1] == "__init__"
                dotted = ".".join([name, *(parts[:-1] if package else parts)])
                found[dotted] = (os.path.relpath(os.path.join(folder, file), REPO_ROOT), package)
    return found


MODULES = _modules()


def _is_project(name: str) -> bool:
    top = name.split(".", 1)[0]
    return top == PACKAGE or top in SLICER


def _comments(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if text and not _DIRECTIVE.match(text):
                out[tok.start[0]] = text
    return out


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: str, package: bool, source: str) -> None:
        self.module, self.path, self.package = module, path, package
        self.lines = source.splitlines()
        self.comments = _comments(source)
        self.depth = 0
        self.imports: list[Import] = []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    # ast.NodeVisitor dispatches on these names
    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function  # noqa: N815

    def _add(self, node: ast.stmt, targets: list[str]) -> None:
        lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
        comment = " ".join(self.comments[n] for n in lines if n in self.comments)
        text = " ".join(ast.unparse(node).split())
        self.imports.append(Import(self.module, self.path, node.lineno, text, tuple(targets), self.depth > 0, comment))

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802,B906 (ast.NodeVisitor's name; no child imports)
        self._add(node, [alias.name for alias in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802,B906 (ast.NodeVisitor's name; leaf)
        if node.module == "__future__":
            return
        if node.level:
            package = self.module.split(".") if self.package else self.module.split(".")[:-1]
            if node.level - 1 > len(package) - 1:
                raise AssertionError(
                    f"{self.path}:{node.lineno}: relative import beyond the top package: {ast.unparse(node)}"
                )
            base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        targets = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            targets.append(sub if sub in MODULES else base)  # `from pkg import module` imports that module
        self._add(node, list(dict.fromkeys(targets)))


def _collect() -> list[Import]:
    imports: list[Import] = []
    for module, (path, package) in MODULES.items():
        with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
            source = f.read()
        collector = _Collector(module, path, package, source)
        collector.visit(ast.parse(source, filename=path))
        imports += collector.imports
    return imports


IMPORTS = _collect()


def _layer(module: str) -> int | None:
    """The module's entry in LAYERS, or that of the subpackage holding it (the package's root entry is
    its ``__init__`` only); None when it has none."""
    if module in LAYERS:
        return LAYERS[module]
    parts = module.split(".")
    for n in range(len(parts) - 1, 1 if parts[0] == PACKAGE else 0, -1):
        holder = ".".join(parts[:n])
        if holder in LAYERS and MODULES.get(holder, ("", False))[1]:
            return LAYERS[holder]
    return None


def _where(imp: Import) -> str:
    return f"{imp.path}:{imp.line}: `{imp.text}`"


def _third_party(name: str) -> bool:
    top = name.split(".", 1)[0]
    return not _is_project(name) and top not in sys.stdlib_module_names


def _optional_for(imp: Import, target: str) -> bool:
    """The Slicer extension treats monai_softcam as an optional dependency (installed on first use)."""
    return imp.module.split(".", 1)[0] in SLICER and target.split(".", 1)[0] == PACKAGE


def test_every_module_has_a_layer():
    missing = [f"{path} (module {name})" for name, (path, _) in MODULES.items() if _layer(name) is None]
    assert not missing, (
        "modules without a layer; add each to LAYERS in tests/test_architecture.py and to the layer table in "
        "docs/architecture.md:\n  " + "\n  ".join(missing)
    )


def test_imports_name_existing_project_modules():
    bad = [
        f"{_where(imp)}: no project module {t} (a typo, or a module that was renamed or removed)"
        for imp in IMPORTS
        for t in imp.targets
        if _is_project(t) and t not in MODULES
    ]
    assert not bad, "\n".join(bad)


def test_no_import_from_a_higher_layer():
    bad = []
    for imp in IMPORTS:
        own = _layer(imp.module)
        for t in imp.targets:
            theirs = _layer(t) if t in MODULES else None
            if own is None or theirs is None or theirs <= own:
                continue
            bad.append(
                f"{_where(imp)}: {imp.module} (layer {own}) imports {t} (layer {theirs}); a module may import its own "
                "layer and lower ones only (move the shared code down, or pass it in as an argument)"
            )
    assert (
        not bad
    ), f"{len(bad)} import(s) from a higher layer (see LAYERS in tests/test_architecture.py):\n" + "\n".join(bad)


def _graph() -> dict[str, dict[str, Import]]:
    """module -> {imported project module: the first import statement making that edge}."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for imp in IMPORTS:
        own_packages = {".".join(imp.module.split(".")[:n]) for n in range(1, imp.module.count(".") + 1)}
        for t in imp.targets:
            if t not in MODULES:
                continue
            parts = t.split(".")
            # importing pkg.sub.mod runs pkg/sub/__init__ too, unless the importer is inside pkg.sub already
            for dep in [".".join(parts[:n]) for n in range(1, len(parts))] + [t]:
                if dep in MODULES and dep != imp.module and dep not in own_packages:
                    graph[imp.module].setdefault(dep, imp)
    return graph


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        start, members = component[0], set(component)
        previous: dict[str, str] = {}
        frontier, end = [start], None
        while frontier and end is None:  # breadth first: the shortest way back to start
            following = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        end = v
                        break
                    if w in members and w not in previous:
                        previous[w] = v
                        following.append(w)
                if end is not None:
                    break
            frontier = following
        path = [end]
        while path[-1] != start:
            path.append(previous[path[-1]])
        cycles.append(path[::-1] + [start])
    return cycles


def test_no_import_cycles():
    graph = _graph()
    messages = []
    for cycle in _cycles(graph):
        steps = "\n".join(f"    {a} -> {b}   ({_where(graph[a][b])})" for a, b in zip(cycle, cycle[1:]))
        messages.append(f"  {' -> '.join(cycle)}\n{steps}")
    assert not messages, (
        "import cycles between project modules (function-local imports count; importing pkg.mod runs pkg/__init__):\n"
        + "\n".join(messages)
    )


def test_function_local_imports_are_third_party_with_a_reason():
    bad = []
    for imp in IMPORTS:
        if not imp.local:
            continue
        project = [t for t in imp.targets if _is_project(t) and not _optional_for(imp, t)]
        if project:
            bad.append(
                f"{_where(imp)}: function-local import of project module {', '.join(project)}; import it at the top of "
                "the module (local imports are for optional or heavy third-party dependencies only)"
            )
        elif not imp.comment:
            outside = [t for t in imp.targets if _third_party(t) or _optional_for(imp, t)]
            if outside:
                bad.append(
                    f"{_where(imp)}: function-local import of {', '.join(outside)} without a reason; import it at the "
                    "top of the module, or say why on the same line (e.g. `# optional: captum`, `# heavy: matplotlib`)"
                )
    assert not bad, f"{len(bad)} function-local import(s) breaking the rule:\n" + "\n".join(bad)


def test_the_checker_sees_what_it_should():
    """Guards against a test that passes because it reads nothing."""
    assert {"monai_softcam", "monai_softcam.data.readers", "SoftCAMLib.volume", "SoftCAM"} <= set(MODULES)
    assert _layer("monai_softcam.networks.backbones") == 1 and _layer("monai_softcam.data") == 2
    assert _layer("SoftCAMLib.inference") == 7 and _layer("monai_softcam.nonexistent") is None
    readers = [imp for imp in IMPORTS if imp.module == "monai_softcam.transforms.input"]
    assert any("monai_softcam.data.readers" in imp.targets for imp in readers)
    assert _cycles({"a": {"b": None}, "b": {"c": None}, "c": {"a": None}, "d": {"a": None}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b": None}, "b": {}}) == []
