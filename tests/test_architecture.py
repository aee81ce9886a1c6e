"""Architecture rules that a reader would otherwise have to check by hand."""

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "anomseg"

#: (module, attribute) -> why a private attribute of another object is read
#: there. Keep it short; every entry is a debt.
ALLOWED_PRIVATE_ACCESS = {
    ("anomseg/persistence/_models.py", "_check_params_unchanged"): (
        "save_model refuses a model whose parameters changed since fit or calibrate, "
        "by the contract's own check; the contract sits above the file format"
    ),
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent), ast.parse(path.read_text())


def _defined_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _subpackage(module):
    parts = module.with_suffix("").parts
    return parts[1] if len(parts) > 2 else None  # None: a module of anomseg itself


def test_no_private_attribute_of_an_object_from_elsewhere():
    """``obj._x`` is only read where ``_x`` is defined: on self, cls or
    super(), or in the module that defines it (a base class's own hooks). No
    module reaches into another module's objects."""
    found = []
    for module, tree in _modules():
        own = _defined_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
                continue
            if node.attr in own or (str(module), node.attr) in ALLOWED_PRIVATE_ACCESS:
                continue
            found.append(f"{module}:{node.lineno} .{node.attr}")
    assert not found, "private attributes read from another module's objects:\n" + "\n".join(found)


def test_no_private_name_imported_from_another_subpackage():
    found = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.level:  # relative: resolve against this module's package
                base = list(module.with_suffix("").parts[: -node.level])
                source = Path(*base, *node.module.split("."))
            else:
                source = Path(*node.module.split("."))
            if source.parts[0] != "anomseg":
                continue
            if _subpackage(source.with_suffix(".py")) == _subpackage(module):
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{module}:{node.lineno} {node.module}.{alias.name}")
    assert not found, "private names imported across subpackages:\n" + "\n".join(found)


def test_io_imports_no_estimator():
    code = (
        "import sys, anomseg.io; "
        "print(sorted(m for m in sys.modules if m.startswith('anomseg.') and "
        "m.split('.')[1] not in ('io', '_version', 'exceptions')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# -- import layers (tools/import_graph.py holds the layer map) -----------------------
def _import_graph():
    """tools/import_graph.py, which is no package: loaded from its file."""
    path = PACKAGE.parent / "tools" / "import_graph.py"
    spec = importlib.util.spec_from_file_location("import_graph", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # for its dataclass
    spec.loader.exec_module(module)
    return module


graph = _import_graph()
REPORT = graph.report(PACKAGE)


def test_every_module_has_a_layer():
    for module in graph.read_package(PACKAGE):
        graph.layer(module)  # raises for a module the map forgot


def test_imports_run_only_downwards():
    """No module imports one of a higher layer, at module level or in a
    function, unless a ``# upward: why`` comment marks the exception."""
    unmarked = REPORT["unmarked"]
    assert not unmarked, "upward imports:\n" + "\n".join(map(str, unmarked))


def test_no_import_cycle_between_files():
    found = REPORT["cycles"]
    assert not found, "import cycles:\n" + "\n".join(", ".join(c) for c in found)


def _new(found, key):
    """What ``found`` (the report of a changed copy) holds under ``key``
    that the package's own report does not: the checks see the injected
    import whatever the package holds already."""

    def comparable(item):  # an Import, or a cycle (a list of modules)
        return tuple(item) if isinstance(item, list) else (str(item), item.marked)

    before = set(map(comparable, REPORT[key]))
    return [item for item in found[key] if comparable(item) not in before]


def _copy_with(tmp_path, module, line):
    """A copy of the package with ``line`` appended to ``module`` (a path
    relative to the package)."""
    copy = tmp_path / "anomseg"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + line)
    return copy


@pytest.mark.parametrize(
    ("line", "target", "function_level"),
    [
        ("\n\ndef _climb():\n    from ..base import BaseAnomalySegmenter\n", "anomseg.base", True),
        ("\nfrom anomseg.cohort import predict_scan\n", "anomseg.cohort", False),
    ],
    ids=["function-level, relative", "module-level, absolute"],
)
def test_the_layer_check_flags_an_upward_import(tmp_path, line, target, function_level):
    (edge,) = _new(graph.report(_copy_with(tmp_path, "io/_nifti.py", line)), "unmarked")
    assert (edge.source, edge.target, edge.function_level) == (
        "anomseg.io._nifti",
        target,
        function_level,
    )


def test_the_layer_check_accepts_a_marked_exception(tmp_path):
    line = (
        "\n\ndef _climb():\n    # upward: a reason\n    from ..base import BaseAnomalySegmenter\n"
    )
    found = graph.report(_copy_with(tmp_path, "io/_nifti.py", line))
    assert [(e.source, e.target) for e in _new(found, "upward")] == [
        ("anomseg.io._nifti", "anomseg.base")
    ]
    assert _new(found, "unmarked") == []


def test_the_cycle_check_flags_a_cycle(tmp_path):
    # metrics imports utils, so utils importing metrics, even in a function,
    # closes a loop.
    copy = _copy_with(
        tmp_path, "utils/_text.py", "\n\ndef _f():\n    from ..metrics import dice\n"
    )
    (component,) = _new(graph.report(copy), "cycles")
    assert "anomseg.utils._text" in component and "anomseg.metrics" in component


def test_the_cycle_check_counts_function_level_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .a import x\n")
    assert graph.report(package, layers=(("pkg",), ("pkg.a", "pkg.b")))["cycles"] == [
        ["pkg.a", "pkg.b"]
    ]
