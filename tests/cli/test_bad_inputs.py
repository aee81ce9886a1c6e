"""Every case of the bad-input matrix (``bad_inputs.py``) is handled
clearly: through the command line and the Python API, one line naming the
problem, the right exit status, no code run from a crafted model file, and
an output folder that holds complete results or nothing."""

import pytest

from . import bad_inputs
from .bad_inputs import CASES, Fixtures, run_case, run_in_process


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return Fixtures(tmp_path_factory.mktemp("fixtures"), run_in_process)


def test_the_matrix_is_large_enough():
    cli = [c for c in CASES if c.interface == "cli"]
    assert len(CASES) >= 60 and len(cli) >= 60
    assert sum(c.marker for c in CASES) >= 20  # crafted model files


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_handled_clearly(case, fixtures, tmp_path):
    kind, result = run_case(case, tmp_path, fixtures)
    assert kind == "clear", f"{kind}: exit {result.status}\n{result.stdout}\n{result.stderr}"
    assert not (tmp_path / "ran").exists()
    if case.interface == "cli" and case.expect == "error":
        assert result.status == (2 if "usage" in result.stderr or "--help" in result.stderr else 1)


def test_the_classes(fixtures, tmp_path):
    """The classes themselves can fail: a wrong message, a silent pass."""
    [case] = [c for c in CASES if c.name == "predict: NaN voxels"]
    wrong = bad_inputs.Case(case.name, case.build, "error", "no such words")
    (tmp_path / "a").mkdir()
    assert run_case(wrong, tmp_path / "a", fixtures)[0] == "misleading"
    [valid] = [c for c in CASES if c.name == "predict: float64 dtype (valid)"]
    expects_error = bad_inputs.Case(valid.name, valid.build, "error", "x")
    (tmp_path / "b").mkdir()
    assert run_case(expects_error, tmp_path / "b", fixtures)[0] == "silent"
