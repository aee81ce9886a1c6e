"""Fit and score times of every public estimator, to compare two checkouts
side by side (such as before and after a refactoring).

Run from the repository root, alternating the checkouts on an idle machine::

    for rep in 1 2; do for src in OLD_CHECKOUT .; do
      (cd $src && OMP_NUM_THREADS=1 python -m benchmarks.performance.bench_fit_score_times)
    done; done

Each run prints one JSON line (and writes it to ``--json``): estimator name
to [fit seconds, scoring seconds], for fitting on 96 and scoring 32
synthetic 64 x 64 images with small settings on one CPU thread. The
estimators are those of :func:`anomseg.utils.all_estimators`; one without
small settings here is an error, so that none is left out. Repetitions of
one checkout vary by up to 2x on the shortest timings; compare means over
repetitions.
"""

import json
import time

import torch

from anomseg.baselines import FlairThreshold
from anomseg.datasets import make_healthy_images
from anomseg.utils import all_estimators
from benchmarks._common import benchmark_parser, write_json

COMMON = {"device": "cpu", "random_state": 0}
PRIOR = {"width": 8, "n_epochs": 4, **COMMON}
RESTORER = {**PRIOR, "n_restoration_steps": 100, "tv_weights": (0.0, 1.0), "max_tv_images": 8}
INPAINTING = {"width": 8, "n_steps": 200, "batch_size": 32, **COMMON}
DAE = {"width": 8, "n_epochs": 4, **COMMON}


def estimators(Y):
    """Each public estimator with small settings, and its fit parameters."""
    from anomseg.adversarial import ASCNetSegmenter
    from anomseg.denoising import DenoisingAESegmenter
    from anomseg.ensemble import AnomalyEnsemble
    from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor
    from anomseg.restoration import GMVAERestorer, VAEReconstructor, VAERestorer

    small = {
        "FlairThreshold": (FlairThreshold(), {}),
        "VAEReconstructor": (VAEReconstructor(**PRIOR), {}),
        "VAERestorer": (VAERestorer(**RESTORER), {}),
        "GMVAERestorer": (GMVAERestorer(**RESTORER), {}),
        "ASCNetSegmenter": (
            ASCNetSegmenter(width=8, n_stage1_cycles=3, n_stage2_cycles=1, **COMMON),
            {"X_unlabelled": Y},
        ),
        "DenoisingAESegmenter": (DenoisingAESegmenter(**DAE), {}),
        "InpaintingLocalizer": (InpaintingLocalizer(**INPAINTING), {}),
        "InpaintingLossPredictor": (
            InpaintingLossPredictor(
                InpaintingLocalizer(**INPAINTING), width=8, n_steps=200, **COMMON
            ),
            {},
        ),
        "AnomalyEnsemble": (
            AnomalyEnsemble(
                [("flair", FlairThreshold()), ("dae", DenoisingAESegmenter(**DAE))],
                random_state=0,
            ),
            {},
        ),
    }
    missing = sorted({name for name, _ in all_estimators()} - set(small))
    if missing:
        raise RuntimeError(f"no small settings for {missing}: add them to estimators()")
    return small


def main():
    args = benchmark_parser(__doc__, data=False).parse_args()
    torch.set_num_threads(1)
    X = make_healthy_images(n_images=96, shape=(64, 64), random_state=0)
    Y = make_healthy_images(n_images=32, shape=(64, 64), random_state=1)
    times = {}
    for name, (estimator, fit_params) in estimators(Y).items():
        start = time.perf_counter()
        estimator.fit(X, **fit_params)
        fitted = time.perf_counter()
        estimator.score_samples(Y)
        times[name] = [fitted - start, time.perf_counter() - fitted]
    print(json.dumps(times))
    write_json(args.json, times)


if __name__ == "__main__":
    main()
