"""Benchmark of the denoising autoencoder (Kascenas et al. 2022) against the
FLAIR baseline, inside the brain.

Run from the repository root::

    OMP_NUM_THREADS=1 python -m benchmarks.quality.bench_denoising \
        [--param random_state=1] [--save dae.anomseg] [--json dae.json]

The protocol is the shared one of ``benchmarks/_lgg.py`` (brain masks, per-volume
scaling, training on the tumour-free slices of the ``train`` patients,
calibration on the tumour-free slices of the ``validation`` patients,
metrics over all their slices, pooled over brain pixels and per patient).

Rows, all from one trained network and calibrated on the same healthy
slices:

* the FLAIR histogram-equalisation baseline on the same voxels;
* the DAE's positive residual (the default) and absolute residual (the
  paper's);
* the positive residual times the equalised FLAIR intensity of the
  baseline (``--no-combined`` leaves it out): the learned map weighted by
  the intensity prior that FLAIR lesions are bright.

``--load MODEL`` evaluates a model saved by ``--save`` instead of training;
``--every`` and ``--healthy-every`` thin the evaluation and calibration
slices. ``--json`` writes the rows.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks._common import (
    add_param_argument,
    benchmark_parser,
    data_folder,
    peak_memory_mib,
    print_table,
    reset_peak_memory,
    write_json,
)
from benchmarks._lgg import (
    COLUMNS,
    add_protocol_arguments,
    describe,
    equalised_slices,
    flair_row,
    load_protocol,
    prior_row,
    scored_row,
)


def main():
    parser = benchmark_parser(__doc__)
    add_protocol_arguments(parser)
    add_param_argument(parser, "DenoisingAESegmenter")
    parser.add_argument("--save", type=Path, help="Save the trained model here.")
    parser.add_argument("--load", type=Path, help="Evaluate this saved model instead.")
    parser.add_argument("--no-combined", action="store_true", help="Skip the combined row.")
    args = parser.parse_args()
    path = data_folder(args, "lgg_flair")
    if path is None:
        return
    from anomseg import load_model
    from anomseg.denoising import DenoisingAESegmenter

    protocol = load_protocol(path, args.region, args.every, args.healthy_every)
    print(f"# Denoising autoencoder on {describe(protocol)}\n", flush=True)
    rows = [flair_row(protocol["val"], protocol["test"], args.every)[1]]

    if args.load:
        model = load_model(args.load)
    else:
        model = DenoisingAESegmenter(**{"random_state": 0, **dict(args.param)})
        X, _, groups = protocol["train"]
        model.fit(X, groups=groups, calibrate=False)
        if args.save:
            model.save(args.save, overwrite=True)
    print(
        f"{model.n_epochs_} epochs (best {model.best_epoch_}), {model.training_time_:.0f} s, "
        f"device {model.device_}; parameters: {model.get_params()}\n",
        flush=True,
    )
    X_test = protocol["test"][0]
    healthy = protocol["healthy_val"]
    positive = None
    for residual in ("positive", "absolute"):
        model.set_params(residual=residual)
        model.calibrate(healthy)
        reset_peak_memory()
        start = time.perf_counter()
        maps = model.score_samples(X_test)
        seconds = (time.perf_counter() - start) / len(X_test)
        name = f"DAE, {residual} residual (width {model.width}, {model.n_epochs_} epochs)"
        extra = {"train s": model.training_time_, "peak MiB": peak_memory_mib()}
        rows.append(
            scored_row(name, maps, protocol, model.calibration_thresholds_, seconds, extra)
        )
        if residual == "positive":
            positive = maps, model.score_samples(healthy), seconds
    if not args.no_combined:
        eq_healthy, eq_test = equalised_slices(protocol["val"], args.every, args.healthy_every)
        maps, healthy_maps, seconds = positive
        rows.append(
            prior_row(
                "DAE positive residual x equalised FLAIR",
                protocol["test"],
                maps,
                eq_test,
                healthy=(healthy, healthy_maps, eq_healthy),
                extra={"s/slice": seconds},
            )
        )
    print_table(rows, COLUMNS)
    write_json(args.json, {"rows": rows, "parameters": model.get_params()})


if __name__ == "__main__":
    main()
