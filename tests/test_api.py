"""The public API is findable: every name that docs/api.rst documents
imports from the module it is documented under, and is in that module's
``__all__``."""

import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).parents[1] / "docs" / "api.rst"


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
