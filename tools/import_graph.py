"""The import graph of anomseg, checked against its layers.

Run ``python tools/import_graph.py [PACKAGE_DIR]``: it reads every module
of the package with :mod:`ast` (it imports nothing, and needs nothing but
the standard library), builds the graph of the imports between its files,
module-level and function-level, relative and absolute, and prints

* the files tied into import cycles (strongly connected components of more
  than one file), counting function-level imports, which close a cycle as
  surely as module-level ones once the function runs;
* the function-level imports;
* the imports that climb from a module to one in a higher layer of
  :data:`LAYERS`, marked (``# upward: why`` on the import's first line or
  on the comment lines right above it) or not.

It exits with 1 when there is a cycle or an unmarked upward import, which
``tests/test_architecture.py`` checks too. An edge goes to the module that
an import statement names (``from .io import x`` goes to ``io/__init__``,
``from .io._nifti import x`` to ``io/_nifti``), and to a submodule when the
imported name is one (``from . import io``). Imports by a computed name
(:func:`importlib.import_module`, as the registry of methods does) are not
seen; say why they are there in a comment.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

#: The layers of anomseg, lowest first, each a tuple of module prefixes.
#: A module may import from its own layer and those below, never from one
#: above (except where a ``# upward:`` comment says why). Within a layer,
#: the absence of cycles keeps the order. A module takes the layer of its
#: longest matching prefix; the package's own ``__init__`` ("anomseg") is
#: matched by its name only.
LAYERS = (
    # The ground floor: the package's namespace (it imports ``_version``
    # only; its public functions are imported by name on first use), and
    # what every module may use.
    ("anomseg", "anomseg._version", "anomseg.exceptions", "anomseg._docstrings"),
    # Arrays and files. io reads scans into the ImageBatch of utils, and
    # utils reads exclusion masks through io: the two share a floor, and the
    # cycle check keeps them apart file by file.
    ("anomseg.utils", "anomseg.io"),
    # What the estimators compute with: figures on arrays, the calibration
    # arithmetic, data-parallel training.
    ("anomseg.metrics", "anomseg._calibration", "anomseg.distributed"),
    # The training lifecycle's callbacks and checkpoints: files and
    # data-parallel training below, the torch contract above drives them.
    ("anomseg.callbacks",),
    # Model files: the format, the records and the allow-list. It knows the
    # estimators by the hooks they implement and by the registry's dotted
    # paths, so that the contract above saves and loads itself downwards.
    ("anomseg.persistence",),
    # The estimator contract, and its torch half.
    ("anomseg.base", "anomseg._torch"),
    # The methods, and the transformers, data and scorers around them.
    (
        "anomseg.baselines",
        "anomseg.restoration",
        "anomseg.adversarial",
        "anomseg.denoising",
        "anomseg.inpainting",
        "anomseg.preprocessing",
        "anomseg.postprocessing",
        "anomseg.model_selection",
        "anomseg.datasets",
        "anomseg.plotting",
    ),
    # What combines the methods.
    ("anomseg.ensemble",),
    # Whole cohorts of scans.
    ("anomseg.cohort",),
    # The command line on top.
    ("anomseg.cli", "anomseg.__main__"),
)

#: The comment that marks a deliberate upward import.
UPWARD_MARK = "# upward:"


@dataclass(frozen=True)
class Import:
    """One import of a module of the package by another."""

    source: str
    target: str
    line: int
    function_level: bool
    marked: bool

    def __str__(self):
        where = "function" if self.function_level else "module"
        return f"{self.source}:{self.line} -> {self.target} ({where} level)"


def module_name(path, root):
    """The dotted name of the module at ``path`` in the package at ``root``."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_package(root):
    """Module name to ``(is_package, source text)`` for every ``.py`` file."""
    root = Path(root)
    return {
        module_name(path, root): (path.name == "__init__.py", path.read_text())
        for path in sorted(root.rglob("*.py"))
    }


def _enclosing_functions(tree):
    """The import nodes of ``tree`` inside a function body."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for child in ast.walk(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    inside.add(id(child))
    return inside


def _marked(lines, node):
    """Whether the import ``node`` carries the upward mark: on its first
    line, or on the comment lines right above it."""
    if UPWARD_MARK in lines[node.lineno - 1]:
        return True
    k = node.lineno - 2
    while k >= 0 and lines[k].strip().startswith("#"):
        if lines[k].strip().startswith(UPWARD_MARK):
            return True
        k -= 1
    return False


def _targets(node, module, is_package, modules):
    """The modules of the package that an import node names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [_known(name, modules) for name in names]
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module
    found = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found.append(submodule if submodule in modules else _known(base, modules))
    return found


def _known(name, modules):
    """``name``, or the closest enclosing module of the package, or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(modules):
    """Every import of a module of the package by another, as :class:`Import`."""
    found = []
    for module, (is_package, text) in modules.items():
        tree = ast.parse(text)
        lines = text.splitlines()
        inside = _enclosing_functions(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = {t for t in _targets(node, module, is_package, modules) if t}
            for target in sorted(targets - {module}):
                found.append(
                    Import(module, target, node.lineno, id(node) in inside, _marked(lines, node))
                )
    return sorted(found, key=lambda i: (i.source, i.line, i.target))


def cycles(modules, edges):
    """The strongly connected components of more than one module (Tarjan),
    each sorted, largest first."""
    graph = {m: set() for m in modules}
    for edge in edges:
        graph[edge.source].add(edge.target)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found, key=lambda c: (-len(c), c))


def layer(module, layers=LAYERS):
    """The index in ``layers`` of the longest prefix of ``module``; a
    ValueError if none matches (every module must have a place)."""
    best = None
    for k, prefixes in enumerate(layers):
        for prefix in prefixes:
            # The package itself ("anomseg") is a layer's entry for itself only.
            matches = module == prefix or ("." in prefix and module.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > len(best[1])):
                best = (k, prefix)
    if best is None:
        raise ValueError(f"{module} is in no layer of the layer map; add it to LAYERS.")
    return best[0]


def upward(edges, layers=LAYERS):
    """The imports that go to a module of a higher layer."""
    return [e for e in edges if layer(e.target, layers) > layer(e.source, layers)]


def report(root, layers=LAYERS):
    """The figures of the package at ``root``: a dict with ``edges``,
    ``cycles``, ``function_level``, ``upward`` and ``unmarked`` (the
    upward imports without a ``# upward:`` comment)."""
    modules = read_package(root)
    edges = imports(modules)
    climbing = upward(edges, layers)
    return {
        "modules": modules,
        "edges": edges,
        "cycles": cycles(modules, edges),
        "function_level": [e for e in edges if e.function_level],
        "upward": climbing,
        "unmarked": [e for e in climbing if not e.marked],
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else Path(__file__).parents[1] / "anomseg")
    found = report(root)
    in_cycles = sorted({m for c in found["cycles"] for m in c})
    print(f"{len(found['modules'])} modules, {len(found['edges'])} imports between them")
    print(f"{len(in_cycles)} files in import cycles ({len(found['cycles'])} cycles)")
    for component in found["cycles"]:
        print("  cycle: " + ", ".join(component))
    print(f"{len(found['function_level'])} function-level imports")
    for edge in found["function_level"]:
        print(f"  {edge}")
    print(f"{len(found['upward'])} upward imports, {len(found['unmarked'])} not marked")
    for edge in found["upward"]:
        print(f"  {edge}{'' if not edge.marked else ' [marked]'}")
    return 1 if found["cycles"] or found["unmarked"] else 0


if __name__ == "__main__":
    sys.exit(main())
