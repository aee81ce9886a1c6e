"""Write the model files of ``tests/io/test_legacy.py``.

Run once, with anomseg 0.1.0.dev0 (commit b8160f6, before the lifecycle
redesign), from the repository root::

    OMP_NUM_THREADS=1 python tests/data/legacy/make_legacy_models.py

Every estimator is fitted tiny on synthetic images and saved in each format
that version wrote: a joblib pickle (``save_model``), the safe torch file
(``save_torch_model``, torch estimators only), and two pipelines as
``anomseg fit`` wrote them. ``expected.npz`` holds the input images and the
maps each model gave when it was saved; later versions must load every file
and give the same maps.
"""

from pathlib import Path

import numpy as np
import torch

from anomseg.adversarial import ASCNetSegmenter
from anomseg.baselines import FlairThreshold
from anomseg.datasets import add_synthetic_lesions, make_healthy_images
from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor
from anomseg.io import save_model, save_torch_model
from anomseg.preprocessing import ForegroundMasker, IntensityScaler, make_anomaly_pipeline
from anomseg.restoration import GMVAERestorer, VAEReconstructor, VAERestorer

HERE = Path(__file__).parent


def main():
    torch.set_num_threads(1)
    X = make_healthy_images(n_images=16, shape=(24, 24), random_state=0)
    Y, _ = add_synthetic_lesions(
        make_healthy_images(n_images=3, shape=(24, 24), random_state=5),
        radius=(2, 4),
        contrast=0.8,
        random_state=1,
    )
    prior = {"width": 2, "n_epochs": 2, "batch_size": 4, "device": "cpu", "random_state": 0}
    restoration = {"n_restoration_steps": 5, "tv_weights": (0.0, 1.0)}
    inpainting = {
        "window_size": 4,
        "width": 2,
        "n_steps": 5,
        "batch_size": 8,
        "device": "cpu",
        "random_state": 0,
    }
    models = {
        "flairthreshold": FlairThreshold().fit(X),
        "vaereconstructor": VAEReconstructor(**prior).fit(X),
        "vaerestorer": VAERestorer(**prior, **restoration).fit(X),
        "gmvaerestorer": GMVAERestorer(**prior, **restoration, n_clusters=2).fit(X),
        "ascnetsegmenter": ASCNetSegmenter(
            width=2,
            n_stage1_cycles=1,
            n_stage2_cycles=1,
            discriminator_steps=1,
            generator_steps=2,
            batch_size=4,
            device="cpu",
            random_state=0,
        ).fit(X, X_unlabelled=Y),
        "inpaintinglocalizer": InpaintingLocalizer(**inpainting).fit(X),
        "inpaintinglosspredictor": InpaintingLossPredictor(
            InpaintingLocalizer(**inpainting),
            width=2,
            n_steps=5,
            batch_size=8,
            device="cpu",
            random_state=0,
        ).fit(X),
        # as `anomseg fit --method flair-threshold --foreground auto` wrote it
        "pipeline-flairthreshold": make_anomaly_pipeline(ForegroundMasker(), FlairThreshold()).fit(
            X
        ),
        # as `anomseg fit --method vae-reconstruction` wrote it
        "pipeline-vaereconstructor": make_anomaly_pipeline(
            IntensityScaler(upper_percentile=90.0, clip=False), VAEReconstructor(**prior)
        ).fit(X),
    }
    expected = {"images": Y}
    for name, model in models.items():
        expected[name] = model.score_samples(Y)
        save_model(model, HERE / f"{name}.joblib", overwrite=True)
        if hasattr(model, "module_"):
            save_torch_model(model, HERE / f"{name}.pt", overwrite=True)
    np.savez_compressed(HERE / "expected.npz", **expected)


if __name__ == "__main__":
    main()
