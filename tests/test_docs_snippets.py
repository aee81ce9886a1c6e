"""Every snippet of README.md and docs/**/*.rst runs as written.

The Python blocks of a page (```python fences, ``.. code-block:: python``,
``>>>`` lines; extracted by tests/test_api.py) run in order in one namespace
per page, so a page may continue a sequence, in a temporary working
directory. A failure names the page and line.

The snippets are written to run: on the data embedded in anomseg
(``load_demo_mslub``) and the synthetic data of ``anomseg.datasets``, which a
set-up snippet near the top of a page turns into the names and NIfTI files
that the later ones use, and, where they train a deep model, with tiny
settings that they say are tiny. The cheap ones (the FLAIR baseline, the
imports, the slicing, the metrics, the I/O, a cohort scored by two worker
processes, a VAE of width 4 trained for 2 epochs on four 32 x 32 x 16
volumes in well under a second) run in the default suite: about 13 s
together on 2 busy cores. Those whose training takes seconds (``SLOW``: the
README's and the user guide's with ``**tiny`` (a GMVAE), the user guide's
saving of that GMVAE, its grid search over VAEs and its brain extraction of
three volumes by deepbet) take about 50 s together, more on a busy machine,
and run under the ``slow`` marker (``make test-all``), after the cheap ones
of their page. A snippet that cannot run as it stands (it needs torchrun or
a Dask scheduler, or trains for hours) is listed in ``NOT_RUN`` with the
reason; test_api.py still checks its imports.
``test_the_lists_hold_only_snippets_that_exist`` keeps both lists current.

The ```bash blocks are checked for parsing: each ``anomseg`` command line
names a command of the CLI and only options that command has.
"""

import importlib.util
import shlex
import traceback
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.rst"))]
PAGES = [p for p in PAGES if not {"_build", "auto_examples", "gen_modules"} & set(p.parts)]


def _test_api():
    """tests/test_api.py, which holds the extraction of the snippets: loaded
    from its file, as the test modules are no package."""
    spec = importlib.util.spec_from_file_location(
        "_test_api", Path(__file__).with_name("test_api.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_code_blocks = _test_api()._code_blocks

#: Snippets that cannot run as they stand, by page and a line they hold.
NOT_RUN = {
    ("docs/scale.rst", "from distributed import Client"): (
        "connects to a Dask scheduler that the reader starts; tests/test_cohort.py makes the"
        " same call on a LocalCluster under -m scale"
    ),
    ("docs/scale.rst", "# train.py, run as: torchrun --nproc-per-node 2 train.py"): (
        "a script for torchrun; tests/test_distributed.py runs one under -m scale"
    ),
    (
        "docs/scale.rst",
        "est = GMVAERestorer.published(",
    ): "trains the paper's GMVAE for 200 epochs",
}

#: Snippets that train a deep model, run under the slow marker: by page and a
#: line they hold.
SLOW = {
    ("README.md", "**tiny"),
    ("docs/user_guide.rst", "BrainExtractor(), FlairThreshold"),
    ("docs/user_guide.rst", "**tiny"),
    ("docs/user_guide.rst", "scoring=healthy_change_scorer"),
    ("docs/user_guide.rst", 'restorer.save("gmvae.anomseg")'),
}


def _name(path):
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _first(block):
    """(line number, text) of the first line of code of ``block``."""
    return next((number, text.strip()) for number, text in block if text.strip())


def _holds(path, block, listed):
    """The entries of ``listed`` that ``block`` of ``path`` holds."""
    text = "\n".join(line.strip() for _, line in block)
    return [key for key in listed if key[0] == _name(path) and key[1] in text]


def _blocks(path, slow):
    """The blocks of ``path`` to run, the slow ones too if ``slow``."""
    return [
        b
        for b in _code_blocks(path)
        if not _holds(path, b, NOT_RUN) and (slow or not _holds(path, b, SLOW))
    ]


def _run(path, blocks):
    """Run ``blocks`` in order in one namespace, compiled at their line
    numbers in ``path`` so that a traceback points into the page."""
    namespace = {"__name__": "__snippet__"}
    for block in blocks:
        lines = [""] * (block[-1][0])
        for number, text in block:
            lines[number - 1] = text
        code = compile("\n".join(lines), _name(path), "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            lines = [f.lineno for f in frames if f.filename == _name(path)]
            where = f"{_name(path)}:{lines[-1] if lines else _first(block)[0]}"
            raise AssertionError(f"the snippet at {where} fails: {exc!r}") from exc


def _run_page(path, slow, tmp_path, monkeypatch):
    blocks = _blocks(path, slow)
    if not blocks:
        pytest.skip(f"{path.name} shows no Python snippet that runs")
    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg")
    _run(path, blocks)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_snippet_runs(path, tmp_path, monkeypatch):
    _run_page(path, False, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", sorted({ROOT / page for page, _ in SLOW}), ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_python_snippet_runs_with_those_that_train(path, tmp_path, monkeypatch):
    _run_page(path, True, tmp_path, monkeypatch)


def test_the_lists_hold_only_snippets_that_exist():
    blocks = [(p, b) for p in PAGES for b in _code_blocks(p)]
    for key in NOT_RUN:
        matches = [b for p, b in blocks if _holds(p, b, [key])]
        assert len(matches) == 1, f"NOT_RUN: {len(matches)} snippets hold {key}"
    for key in SLOW:
        assert any(_holds(p, b, [key]) for p, b in blocks), f"SLOW: no snippet holds {key}"


def test_a_broken_snippet_fails_with_its_page_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Text\n\n```python\nx = 1\n\ny = x + undefined\n```\n")
    with pytest.raises(AssertionError, match=r"page.md:6 fails: NameError"):
        _run(page, _code_blocks(page))


# -- the command lines ----------------------------------------------------------------
def _command_lines(path):
    """(where, argv) of each ``anomseg`` command line of the ```bash and
    ``.. code-block:: bash`` blocks of ``path``."""
    found, in_bash, command = [], False, ""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if stripped in ("```bash", ".. code-block:: bash", ".. code-block:: console"):
            in_bash = True
        elif in_bash and (stripped == "```" or (line[:1].strip() and path.suffix == ".rst")):
            in_bash = False
        elif in_bash:
            command += stripped.removeprefix("$ ").split(" #")[0]
            if command.endswith("\\"):  # continued on the next line
                command = command[:-1]
                continue
            if command.startswith("anomseg "):
                found.append((f"{path.relative_to(ROOT)}:{number}", shlex.split(command)[1:]))
            command = ""
    return found


COMMAND_LINES = [c for p in PAGES for c in _command_lines(p)]


def test_the_docs_show_command_lines():
    assert len(COMMAND_LINES) > 20


@pytest.mark.parametrize(("where", "argv"), COMMAND_LINES, ids=[w for w, _ in COMMAND_LINES])
def test_every_command_line_names_options_that_exist(where, argv):
    from anomseg.cli._main import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if a.choices and a.dest != "help"]
    assert argv and argv[0] in commands.choices, f"{where}: no command {argv[:1]}"
    options = {o for a in commands.choices[argv[0]]._actions for o in a.option_strings}
    unknown = [
        a.split("=")[0] for a in argv[1:] if a.startswith("-") and a.split("=")[0] not in options
    ]
    assert not unknown, f"{where}: anomseg {argv[0]} has no option {unknown}"
