"""The library's output goes through :mod:`logging` (STYLE.md, convention 13):
no library module prints, estimators report at the level their ``verbose``
sets, the fallback handler writes to stderr only while nobody configured
logging, and the command line shows progress on stderr without touching
the estimators or stdout."""

import ast
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import anomseg
from anomseg.baselines import FlairThreshold
from anomseg.cli import main
from anomseg.datasets import make_healthy_images
from anomseg.ensemble import AnomalyEnsemble
from anomseg.utils._logging import LIBRARY_LOGGER

PACKAGE = Path(anomseg.__file__).parent


def stdout_writes(source):
    """The lines of ``source`` that call ``print`` or touch ``sys.stdout``
    (code only: a ``print(`` in a docstring example is the user's)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        printing = (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
        )
        stdout = (
            isinstance(node, ast.Attribute)
            and node.attr in ("stdout", "__stdout__")
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        )
        if printing or stdout:
            lines.append(node.lineno)
    return sorted(set(lines))


def test_the_checker_finds_a_print_and_a_write_to_stdout():
    source = '''
import sys

def report(x):
    """Examples
    --------
    >>> print(report(1))
    """
    print("done", x)
    sys.stdout.write("more")
    return x
'''
    assert stdout_writes(source) == [9, 10]
    assert stdout_writes("def f(x):\n    return x\n") == []


def test_no_library_module_prints():
    """Outside the command line (which prints its results), every message
    goes through logging."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith("cli/"):
            continue
        lines = stdout_writes(path.read_text(encoding="utf-8"))
        if lines:
            found[name] = lines
    assert not found, f"print or sys.stdout in library code (file: lines): {found}"


# -- an estimator's messages ---------------------------------------------------------
@pytest.fixture
def healthy():
    slices = make_healthy_images(n_images=12, shape=(24, 24), random_state=0)
    return [np.moveaxis(slices[:6], 0, -1), np.moveaxis(slices[6:], 0, -1)]


@pytest.fixture
def records():
    """The records that reach a handler on the ``anomseg`` logger, which
    lets every level through."""

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.records = []

        def emit(self, record):
            self.records.append(record)

    library = logging.getLogger(LIBRARY_LOGGER)
    handler, level = Keep(), library.level
    library.setLevel(logging.DEBUG)  # not .level =: setLevel clears the loggers' caches
    library.addHandler(handler)
    yield handler.records
    library.removeHandler(handler)
    library.setLevel(level)


@pytest.mark.parametrize("verbose, level", [(1, logging.INFO), (0, logging.DEBUG)])
def test_verbose_sets_the_level_and_nothing_reaches_stdout(
    healthy, records, capsys, verbose, level
):
    ensemble = AnomalyEnsemble([("a", FlairThreshold()), ("b", FlairThreshold(n_bins=64))])
    ensemble.set_params(verbose=verbose).fit(healthy)
    mine = [r for r in records if r.name == "anomseg.ensemble._ensemble"]
    assert "[AnomalyEnsemble] training member 1/2" in mine[0].getMessage()
    assert {r.levelno for r in mine} == {level}
    assert capsys.readouterr().out == ""


def test_the_fallback_writes_to_stderr_until_the_application_configures_logging(
    healthy, capsys, monkeypatch
):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's own, set aside
    ensemble = AnomalyEnsemble([("a", FlairThreshold())], verbose=1)
    ensemble.fit(healthy)
    out, err = capsys.readouterr()
    assert out == "" and "[AnomalyEnsemble] training member 1/1" in err

    class Keep(logging.Handler):
        messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logging.getLogger().addHandler(Keep())  # the application's
    ensemble.fit(healthy)
    assert capsys.readouterr() == ("", "")
    assert Keep.messages[0].startswith("[AnomalyEnsemble] training member 1/1")


# -- the command line ----------------------------------------------------------------
@pytest.fixture
def scans(tmp_path, healthy):
    paths = []
    for i, volume in enumerate(healthy):
        paths.append(tmp_path / f"healthy{i}.nii.gz")
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), paths[-1])
    return paths


@pytest.mark.parametrize("progress", [True, False])
def test_the_command_line_shows_progress_on_stderr_without_touching_verbose(
    scans, tmp_path, capsys, monkeypatch, progress
):
    set_params = AnomalyEnsemble.set_params

    def untouched(self, **params):
        assert "verbose" not in params, "the command line changed an estimator's verbose"
        return set_params(self, **params)

    monkeypatch.setattr(AnomalyEnsemble, "set_params", untouched)
    model = tmp_path / "model.anomseg"
    flags = [] if progress else ["--no-progress"]
    argv = ["fit", "--method", "flair-threshold", "--ensemble", "2", *scans, "-o", model]
    assert main([*map(str, argv), *flags]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("saved ") and len(out.splitlines()) == 1  # the result only
    assert ("[AnomalyEnsemble] training member 1/1" in err) is progress
    assert anomseg.load_model(model).verbose == 0
    # what the command added to the anomseg logger is gone with it
    assert logging.getLogger(LIBRARY_LOGGER).level == logging.INFO
