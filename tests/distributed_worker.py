"""A worker of tests/test_distributed.py, run by ``torchrun``: fits the
estimators a JSON file describes inside :func:`anomseg.distributed.process_group`
and writes what the test compares (``rank<r>_<name>.pkl`` per process, and
the model ``<name>.anomseg`` from rank 0)."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from anomseg.datasets import make_healthy_images
from anomseg.distributed import is_main_process, process_group, rank, world_size
from anomseg.persistence._registry import method_class


def fit(spec):
    """The estimator ``spec`` describes, fitted on its toy images."""
    X = make_healthy_images(**spec["data"])
    params = dict(spec["params"])
    if "inpainter" in params:
        params["inpainter"] = method_class("inpainting")(**params["inpainter"])
    estimator = method_class(spec["method"])(**params)
    unlabelled = spec.get("unlabelled")
    if unlabelled:
        return estimator.fit(X, X_unlabelled=make_healthy_images(**unlabelled))
    return estimator.fit(X)


def summary(estimator):
    """What every process must agree on."""
    return {
        "world_size": world_size(),
        "history": [{k: v for k, v in r.items() if k != "seconds"} for r in estimator.history_],
        "weights": {k: v.cpu().numpy() for k, v in estimator.module_.state_dict().items()},
        "threshold": float(getattr(estimator, "threshold_", np.nan)),
        "attributes": {
            key: getattr(estimator, key)
            for key in ("n_training_windows_", "loss_scale_", "tv_weight_", "n_epochs_")
            if hasattr(estimator, key)
        },
        "training_time": estimator.training_time_,
    }


def main(spec_path):
    torch.set_num_threads(1)
    specs = json.loads(Path(spec_path).read_text())
    out = Path(specs["out"])
    with process_group(device="cpu"):
        for name, spec in specs["fits"].items():
            estimator = fit(spec)
            with open(out / f"rank{rank()}_{name}.pkl", "wb") as f:
                pickle.dump(summary(estimator), f)
            if is_main_process():
                estimator.save(out / f"{name}.anomseg")


if __name__ == "__main__":
    main(sys.argv[1])
