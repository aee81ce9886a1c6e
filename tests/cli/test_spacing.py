"""``anomseg fit --spacing``: the model resamples every scan to a voxel
size, and ``anomseg predict`` writes the maps on each scan's own grid."""

import warnings

import nibabel as nib
import numpy as np

from anomseg import load_model, model_info
from anomseg.cli import main
from anomseg.preprocessing import Resampler

from .bad_inputs import AFFINE, volume, write


def run(*args):
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        return main([*map(str, args), "--no-progress"])


def test_fit_spacing_then_predict_writes_maps_on_each_scans_grid(tmp_path, capsys):
    healthy = [write(tmp_path / f"h{i}.nii.gz", volume(i)) for i in range(3)]
    # Another site: twice the voxels in plane, each half the size, on a grid
    # of the same field of view.
    fine_affine = AFFINE @ np.diag([0.5, 0.5, 1.0, 1.0])
    fine = np.repeat(np.repeat(volume(5), 2, axis=0), 2, axis=1)
    other = write(tmp_path / "other.nii.gz", fine, fine_affine)
    model = tmp_path / "m.anomseg"
    assert (
        run("fit", *healthy, "--method", "flair-threshold", "--spacing", "1,1,2", "-o", model) == 0
    )
    loaded = load_model(model)
    assert isinstance(loaded[0], Resampler) and loaded[0].spacing_ == (1.0, 1.0, 2.0)
    info = model_info(model)
    assert "--spacing 1,1,2" in info["metadata"]["written_by"]
    assert info["metadata"]["spacing"] == [1.0, 1.0, 2.0]
    capsys.readouterr()

    out = tmp_path / "out"
    assert run("predict", model, other, healthy[0], "-o", out) == 0
    err = capsys.readouterr().err
    # The model resamples: the other voxel size is no reason to warn.
    assert "resample it" not in err
    for scan in (other, healthy[0]):
        stem = scan.rsplit("/", 1)[-1].removesuffix(".nii.gz")
        source = nib.load(scan)
        for suffix in ("anomaly_map", "mask"):
            written = nib.load(out / f"{stem}_{suffix}.nii.gz")
            assert written.shape == source.shape
            np.testing.assert_allclose(written.affine, source.affine)
    # The same head at both voxel sizes: a like share of it flagged.
    mask = nib.load(out / "other_mask.nii.gz").get_fdata() > 0
    assert mask.shape == (48, 48, 6) and 0 < mask.sum() < 0.2 * (fine != 0).sum()
