"""``--max-voxels`` counts the voxels the model processes: a scan within it
that ``--spacing`` resamples beyond it is refused in one line."""

import numpy as np

from anomseg.cli import main

from .bad_inputs import AFFINE, SHAPE, volume, write


def test_max_voxels_counts_the_voxels_after_resampling(tmp_path, capsys):
    healthy = [write(tmp_path / f"h{i}.nii.gz", volume(i)) for i in range(2)]
    model = str(tmp_path / "m.anomseg")
    fit = ["fit", "--method", "flair-threshold", *healthy, "-o", model, "--no-progress"]
    n_voxels = int(np.prod(SHAPE))  # 1.2 x 1 x 2 mm voxels: 0.6 x 0.5 x 1 mm, 8 times as many
    assert main([*fit, "--max-voxels", str(n_voxels), "--spacing", "1.2,1,2"]) == 0
    capsys.readouterr()
    status = main([*fit, "--overwrite", "--max-voxels", str(n_voxels), "--spacing", "0.6,0.5,1"])
    err = capsys.readouterr().err
    assert status == 1
    assert f"to 48 x 48 x 12 voxels ({8 * n_voxels:,}), beyond the budget of {n_voxels:,}" in err
    assert f"'{healthy[0]}': X[0] passed to Resampler.transform" in err  # which scan
    assert "--max-voxels N" in err and len(err.strip().splitlines()) == 2  # fitting..., error
    assert AFFINE[0, 0] == -1.2  # the voxel size the numbers above assume


def test_predict_counts_the_voxels_of_the_models_spacing(tmp_path, capsys):
    healthy = [write(tmp_path / f"h{i}.nii.gz", volume(i)) for i in range(2)]
    model = str(tmp_path / "m.anomseg")
    fit = ["fit", "--method", "flair-threshold", *healthy, "-o", model, "--spacing", "0.6,0.5,1"]
    assert main([*fit, "--no-progress"]) == 0
    capsys.readouterr()
    n_voxels = int(np.prod(SHAPE))
    predict = ["predict", model, healthy[0], "-o", str(tmp_path / "out"), "--no-progress"]
    assert main([*predict, "--max-voxels", str(n_voxels)]) == 1
    err = capsys.readouterr().err
    assert healthy[0] in err and f"beyond the budget of {n_voxels:,} voxels" in err
    assert main([*predict, "--max-voxels", str(8 * n_voxels)]) == 0
