"""Every model file that anomseg 0.1 wrote still loads and gives the maps it
gave then (``tests/data/legacy/make_legacy_models.py`` wrote them)."""

from pathlib import Path

import numpy as np
import pytest

from anomseg import load_model
from anomseg.exceptions import VersionMismatchWarning

LEGACY = Path(__file__).parent / "data" / "legacy"
EXPECTED = np.load(LEGACY / "expected.npz")
FILES = sorted(p.name for p in LEGACY.iterdir() if p.suffix in (".joblib", ".pt"))


def test_every_estimator_and_format_is_there():
    assert len(FILES) == 15  # 9 pickles (7 estimators, 2 pipelines), 6 safe files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", FILES)
def test_old_files_load_and_score_as_they_did(name):
    with pytest.warns(VersionMismatchWarning, match="0.1.0.dev0"):
        # safe files of format 1 have no checksum: loaded only on request
        model = load_model(
            LEGACY / name,
            allow_pickle=name.endswith(".joblib"),
            allow_unchecked=name.endswith(".pt"),
        )
    expected = EXPECTED[name.split(".")[0]]
    maps = model.score_samples(EXPECTED["images"])
    # the same weights and code path; floating point may differ across CPUs
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    final = model[-1] if hasattr(model, "steps") else model
    np.testing.assert_array_equal(model.predict(EXPECTED["images"]), maps > final.threshold_)
    for record in getattr(final, "history_", []):  # upgraded to today's format
        assert next(iter(record)) == "epoch" and "cycle" not in record
