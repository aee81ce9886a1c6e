"""Fit and score times of every estimator, to compare two checkouts side by
side (such as before and after a refactoring).

Run from the repository root, alternating the checkouts on an idle machine::

    for rep in 1 2; do for src in OLD_CHECKOUT .; do
      OMP_NUM_THREADS=1 PYTHONPATH=$src python benchmarks/bench_fit_score_times.py
    done; done

Each run prints one JSON line: estimator name to [fit seconds, scoring
seconds], for fitting on 96 and scoring 32 synthetic 64 x 64 images with small
settings on one CPU thread. Repetitions of one checkout vary by up to 2x on
the shortest timings; compare means over repetitions.
"""

import json
import time

import torch

from anomseg.adversarial import ASCNetSegmenter
from anomseg.baselines import FlairThreshold
from anomseg.datasets import make_healthy_images
from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor
from anomseg.restoration import GMVAERestorer, VAERestorer


def main():
    torch.set_num_threads(1)
    X = make_healthy_images(n_images=96, shape=(64, 64), random_state=0)
    Y = make_healthy_images(n_images=32, shape=(64, 64), random_state=1)
    prior = {"width": 8, "n_epochs": 4, "n_restoration_steps": 100, "tv_weights": (0.0, 1.0)}
    inpainting = {"width": 8, "n_steps": 200, "batch_size": 32, "device": "cpu", "random_state": 0}
    common = {"device": "cpu", "random_state": 0}
    estimators = {
        "FlairThreshold": (FlairThreshold(), {}),
        "VAERestorer": (VAERestorer(**prior, max_tv_images=8, **common), {}),
        "GMVAERestorer": (GMVAERestorer(**prior, max_tv_images=8, **common), {}),
        "ASCNetSegmenter": (
            ASCNetSegmenter(width=8, n_stage1_cycles=3, n_stage2_cycles=1, **common),
            {"X_unlabelled": Y},
        ),
        "InpaintingLocalizer": (InpaintingLocalizer(**inpainting), {}),
        "InpaintingLossPredictor": (
            InpaintingLossPredictor(
                InpaintingLocalizer(**inpainting), width=8, n_steps=200, **common
            ),
            {},
        ),
    }
    times = {}
    for name, (estimator, fit_params) in estimators.items():
        start = time.perf_counter()
        estimator.fit(X, **fit_params)
        fitted = time.perf_counter()
        estimator.score_samples(Y)
        times[name] = [fitted - start, time.perf_counter() - fitted]
    print(json.dumps(times))


if __name__ == "__main__":
    main()
