"""The public API is findable: every name that docs/api.rst documents
imports from the module it is documented under, and is in that module's
``__all__``; and every import that the documentation shows runs."""

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).parents[1]
API = ROOT / "docs" / "api.rst"


def _documented():
    """(module, name) for every entry of an autosummary of docs/api.rst."""
    module, in_summary, entries = None, False, []
    for line in API.read_text().splitlines():
        current = re.match(r"\.\. currentmodule:: (\S+)", line)
        if current:
            module = current.group(1)
        if line.startswith(".. autosummary::"):
            in_summary = True
            continue
        if in_summary:
            if line and not line.startswith(" "):
                in_summary = False
            elif line.strip() and not line.strip().startswith(":"):
                entries.append((module, line.strip()))
    return entries


DOCUMENTED = _documented()


def test_the_reference_lists_names():
    assert len(DOCUMENTED) > 50
    assert ("anomseg", "load_model") in DOCUMENTED


@pytest.mark.parametrize(("module", "name"), DOCUMENTED, ids=lambda x: x)
def test_every_documented_name_imports(module, name):
    imported = importlib.import_module(module)
    assert hasattr(imported, name), f"{module}.{name} is documented but does not import"
    assert name in imported.__all__, f"{module}.{name} is documented but not in __all__"


def test_import_anomseg_stays_light():
    """``import anomseg`` imports neither torch nor scikit-learn: the daily
    names of the package are imported on first use."""
    import subprocess
    import sys

    code = (
        "import sys, anomseg\n"
        "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules\n"
        "from anomseg import load_model\n"
        "import anomseg.persistence\n"
        "assert load_model is anomseg.persistence.load_model"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- every import the documentation shows runs ---------------------------------------
#: The fences and directives that open a block of Python code.
_PYTHON_BLOCK = re.compile(
    r"^(\s*)(```(python|py|pycon)\s*$|\.\. (code-block|code|doctest)::\s*(python|py|pycon)?\s*$)"
)


def _code_blocks(path):
    """(line number, line) of each block of Python that a documentation file
    shows: a run of ``>>>`` and ``...`` lines, or a code block (its lines
    dedented to the block, blank lines kept so that line numbers hold)."""
    blocks, block, block_indent = [], None, None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        prompt = re.match(r"\s*(>>>|\.\.\.)( |$)", line)
        if prompt:
            if block is None:
                block = []
                blocks.append(block)
            block.append((number, line[prompt.end() :]))
            continue
        if block_indent is not None:
            ended = line.strip() and (
                line.startswith("```")
                if path.suffix == ".md"
                else len(line) - len(line.lstrip()) <= block_indent
            )
            if not ended:
                block.append((number, line))
                continue
            block_indent = None
        block = None
        opening = _PYTHON_BLOCK.match(line)
        if opening:
            block_indent = len(opening.group(1))
            block = []
            blocks.append(block)
    return [_dedented(b) for b in blocks if any(text.strip() for _, text in b)]


def _dedented(block):
    while not block[-1][1].strip():
        block = block[:-1]
    indent = min(len(t) - len(t.lstrip()) for _, t in block if t.strip())
    return [(number, text[indent:]) for number, text in block]


def _code_lines(path):
    """(line number, line) of the Python a documentation file shows, each
    line stripped."""
    return [
        (number, text.strip())
        for block in _code_blocks(path)
        for number, text in block
        if text.strip()
    ]


def _imports(path, only_skipped=False):
    """(where, statement) for each import statement among the Python lines of
    ``path``, joined over its continuation lines."""
    found, lines = [], _code_lines(path)
    for k, (number, line) in enumerate(lines):
        if not re.match(r"(import|from) \w", line):
            continue
        statement = line
        for _, following in lines[k + 1 :]:
            if statement.count("(") == statement.count(")") and not statement.endswith("\\"):
                break
            statement += "\n" + following
        if not only_skipped or "doctest: +SKIP" in statement:
            found.append((f"{path.relative_to(ROOT)}:{number}", statement))
    return found


def _optional_modules():
    """The top-level modules of the optional dependencies (pyproject's
    extras), which a test may find absent."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for requirement in (r for group in extras["optional-dependencies"].values() for r in group):
        name, _, extra = re.match(r"([\w.-]+)(\[([\w,-]+)\])?", requirement).groups()
        names.update(n.replace("-", "_") for n in [name, *(extra or "").split(",")] if n)
    return names


# The docstrings of anomseg/ are doctested, except their examples marked
# +SKIP, which are only shown; their imports are checked here.
DOC_IMPORTS = [
    *(i for page in sorted((ROOT / "docs").rglob("*.rst")) for i in _imports(page)),
    *_imports(ROOT / "README.md"),
    *(
        i
        for source in sorted((ROOT / "anomseg").rglob("*.py"))
        for i in _imports(source, only_skipped=True)
    ),
]


def test_the_docs_have_imports_to_check():
    statements = dict(DOC_IMPORTS)
    assert len(statements) > 20
    assert statements["README.md:39"] == "from anomseg.baselines import FlairThreshold"
    assert any(where.startswith("anomseg/cohort.py:") for where in statements)
    for where, statement in statements.items():
        [node] = ast.parse(statement).body
        assert isinstance(node, (ast.Import, ast.ImportFrom)), where


@pytest.mark.parametrize(("where", "statement"), DOC_IMPORTS, ids=[w for w, _ in DOC_IMPORTS])
def test_every_import_in_the_docs_runs(where, statement):
    try:
        exec(compile(statement, where, "exec"), {})
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in _optional_modules() and importlib.util.find_spec(missing) is None:
            pytest.skip(f"{where} imports {missing}, an optional dependency not installed")
        raise AssertionError(f"{where}: {statement!r} fails: {exc}") from exc
    except ImportError as exc:
        raise AssertionError(f"{where}: {statement!r} fails: {exc}") from exc
