"""Architecture rules that a reader would otherwise have to check by hand."""

import ast
import subprocess
import sys
from pathlib import Path

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
