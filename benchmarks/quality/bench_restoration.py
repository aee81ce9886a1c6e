"""Benchmark of MAP restoration with VAE and GMVAE priors (You et al. 2019).

Run from the repository root::

    python -m benchmarks.quality.bench_restoration [--json restoration.json]

Options: ``--region brain`` (the default: the brain masks of the data set,
as the published methods work on skull-stripped scans) or ``--region head``
(:class:`ForegroundMasker`); ``--methods``, ``--every`` and
``--healthy-every`` reduce the work, ``--param`` overrides a restorer
parameter.

Restoration runs the default "fast" schedule (45 momentum steps) unless
``--param schedule=paper`` asks for the reference code's 500 steps, hours
on a 2-core CPU for the full protocol;
``benchmarks/performance/bench_restoration_speed.py`` compares the two. A
reduced run (every 4th evaluation slice, every 3rd healthy validation
slice, 15 epochs, 5 TV weights), one method per process::

    OPTS="--every 4 --healthy-every 3 --record-steps 0,10,20 \
      --param width=16 --param n_epochs=15 \
      --param tv_weights=(0.0,0.5,1.0,2.0,4.0) --param max_tv_images=12"
    OMP_NUM_THREADS=1 python -m benchmarks.quality.bench_restoration \
      --methods flair,vae $OPTS --json vae.json
    OMP_NUM_THREADS=1 python -m benchmarks.quality.bench_restoration \
      --methods flair,gmvae $OPTS --json gmvae.json

and the convergence of the paper's schedule to 500 steps, for the saved VAE,
from::

    OMP_NUM_THREADS=1 python -m benchmarks.quality.bench_restoration \
      --convergence vae.vae.pt --every 12 \
      --record-steps 0,50,100,150,200,300,400,500

Measured figures are in the issue notes and the README / docs, with the
region and options they came from.

The protocol is the shared one of ``benchmarks/_lgg.py``, on the LGG FLAIR set at
128 x 128 (``../shared/data/lgg_flair``):

* every volume is restricted to its brain mask (or head, ``--region head``)
  and scaled by the 90th percentile of those voxels (unclipped,
  :meth:`IntensityScaler.for_deep_methods`) as a whole, then cut into axial
  slices whose background is 0;
* the priors train on the tumour-free slices of the ``train`` patients
  (10 % of the slices held out at random for early stopping);
* the TV weight (``tv_weight="auto"``) and the threshold are chosen again on
  the tumour-free slices of the ``validation`` patients
  (``calibrate``), without any lesion label;
* metrics cover all slices of the ``validation`` patients, pooled over
  their brain (or head) pixels and per patient.

Rows: the FLAIR histogram-equalisation baseline (per volume, as published),
the plain reconstruction residual of the VAE (the same network as the VAE
restorer, its threshold calibrated on the same healthy slices), VAE
restoration and GMVAE restoration. The tumour-free slices lie mostly at the
ends of the volumes, which biases the "healthy" set.

Cost: seconds per slice of ``score_samples`` and the peak resident memory
of the process while scoring (``VmHWM``, reset before each phase), and the
training time. A last table compares one restoration step of the published
configuration (64 channels, 158 x 198, 9 clusters) with the default one, in
the same run, and the AUROC reached after each number of restoration steps.
``--json`` writes the rows, the healthy change per TV weight and the
convergence, and saves each trained model beside the file.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from anomseg.metrics import calibrate_thresholds, evaluate
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
    MAX_FPR,
    RATES,
    add_protocol_arguments,
    describe,
    equalised_slices,
    flair_row,
    load_protocol,
    prepare,
    prior_row,
    row,
    slices,
)


def restorer_rows(cls, params, train, healthy_val, test, record_steps, with_reconstruction, prior):
    X_train, _, groups_train = train
    X_test, y_test, groups_test = test
    foreground = ~np.ma.getmaskarray(X_test)
    # The TV weight and the threshold are chosen on the validation patients'
    # healthy slices by calibrate(); fit only needs a token calibration set
    # (3 training patients) and a fixed weight, to spend no time on either.
    model = cls(**{**params, "tv_weight": 1.0, "calibration_fraction": 0.05})
    model.fit(X_train, groups=groups_train)
    train_seconds = model.training_time_
    model.set_params(tv_weight=params.get("tv_weight", "auto"))
    model.calibrate(healthy_val)  # chooses tv_weight_ and threshold_ on healthy slices
    out = []
    if with_reconstruction:
        healthy_maps = np.abs(np.ma.getdata(healthy_val) - model.reconstruct(healthy_val))
        healthy_fg = ~np.ma.getmaskarray(healthy_val)
        thresholds = calibrate_thresholds(healthy_maps[healthy_fg], RATES)
        reset_peak_memory()
        start = time.perf_counter()
        recon = np.abs(np.ma.getdata(X_test) - model.reconstruct(X_test)) * foreground
        seconds = (time.perf_counter() - start) / len(X_test)
        table = evaluate(
            y_test, recon, foreground=foreground, thresholds=thresholds, groups=groups_test
        )
        out.append(
            row(
                "VAE reconstruction (same network)",
                table,
                seconds,
                {
                    "steps": 0,
                    "train s": train_seconds,
                    "peak MiB": peak_memory_mib(),
                    "tv_weight": None,
                },
            )
        )
        out.append(
            prior_row(
                "  x equalised FLAIR",
                test,
                recon,
                prior[1],
                healthy=(healthy_val, healthy_maps, prior[0]),
            )
        )
    # One restoration of the evaluation slices gives the maps (exactly those
    # of score_samples, which the tests check) and the convergence curve.
    n_steps = model.restoration_schedule()["n_restoration_steps"]
    steps = sorted(set(record_steps) | {n_steps})
    reset_peak_memory()
    start = time.perf_counter()
    recorded = model.restore(X_test, record_steps=steps)
    seconds = (time.perf_counter() - start) / len(X_test)
    peak = peak_memory_mib()
    residual = {s: np.abs(np.ma.getdata(X_test) - r) * foreground for s, r in recorded.items()}
    table = evaluate(
        y_test,
        residual[n_steps],
        foreground=foreground,
        thresholds=model.calibration_thresholds_,
        groups=groups_test,
    )
    name = f"{cls.__name__} (width {params.get('width', 16)})"
    out.append(
        row(
            name,
            table,
            seconds,
            {
                "steps": n_steps,
                "train s": train_seconds,
                "peak MiB": peak,
                "tv_weight": model.tv_weight_,
            },
        )
    )
    # The positive residual (FLAIR lesions are bright) and the intensity
    # prior, from the same restorations; threshold-free, since calibrating
    # them would restore the healthy slices again.
    restored = recorded[n_steps]
    positive = np.maximum(np.ma.getdata(X_test) - restored, 0) * foreground
    table = evaluate(y_test, positive, foreground=foreground)
    out.append(
        {
            "method": "  positive residual (threshold-free)",
            "AUROC": table["AUROC", "pooled"],
            "AUPRC": table["AUPRC", "pooled"],
            "best Dice": table["Best Dice", "pooled"],
        }
    )
    for label, maps in (("absolute", residual[n_steps]), ("positive", positive)):
        out.append(
            prior_row(
                f"  {label} residual x equalised FLAIR (threshold-free)", test, maps, prior[1]
            )
        )
    curve = dict(zip(model.tv_weights_.tolist(), model.healthy_change_.tolist()))
    convergence = {}
    for s, m in residual.items():
        t = evaluate(y_test, m, foreground=foreground)
        convergence[s] = (t["AUROC", "pooled"], t["AUPRC", "pooled"], t["Best Dice", "pooled"])
    return out, curve, convergence, model


# -- printing ----------------------------------------------------------------------
#: Columns of the restoration table.
COLUMNS = [
    "method",
    "AUROC",
    "AUPRC",
    "best Dice",
    "Dice@5% pooled",
    "Dice@5% per patient",
    "tv_weight",
    "steps",
    "s/slice",
    "train s",
    "peak MiB",
]


def step_timing(default_params, n_slices=8, n_steps=3):
    """Seconds per slice of one restoration step (forward, backward, update)
    for the published and the default GMVAE, measured side by side."""
    import torch

    from anomseg.restoration import PUBLISHED_GMVAE, ConvGMVAE, map_restore

    out = {}
    configs = {
        "published (64 ch, 158x198, 9 clusters)": (PUBLISHED_GMVAE, (158, 198)),
        f"default ({default_params['width']} ch, 128x128, "
        f"{default_params['n_clusters']} clusters)": (default_params, (128, 128)),
    }
    for name, (params, shape) in configs.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = ConvGMVAE(1, params["width"], params["latent_channels"], params["n_clusters"])
        module.eval().requires_grad_(False)
        x = torch.rand(n_slices, 1, *shape)
        mask = torch.ones_like(x)
        lam = torch.ones(n_slices)
        map_restore(module, x, mask, lam, [1e-3], 100.0)  # warm-up
        start = time.perf_counter()
        map_restore(module, x, mask, lam, [1e-3] * n_steps, 100.0)
        out[name] = (time.perf_counter() - start) / (n_slices * n_steps)
    return out


def convergence_only(model_path, path, every, record_steps, region="brain"):
    """AUROC / AUPRC / best Dice after each number of restoration steps of a
    model saved by a previous run (``--json`` keeps it), at its TV weight."""
    from anomseg import load_model

    model = load_model(model_path)
    X, y, _ = slices(*prepare(path, "validation", region), lesion_free=None)
    X, y = X[::every], y[::every]
    n_steps = max(record_steps)
    model.set_params(schedule="paper", n_restoration_steps=n_steps)
    start = time.perf_counter()
    recorded = model.restore(X, record_steps=record_steps)
    seconds = time.perf_counter() - start
    print(
        f"# Convergence of {type(model).__name__} (TV weight {model.tv_weight_:g}) on "
        f"{len(X)} validation slices (every {every}th, inside the {region}): "
        f"{seconds / len(X):.2f} s per slice for {n_steps} steps\n"
    )
    foreground = ~np.ma.getmaskarray(X)
    print("| steps | AUROC | AUPRC | best Dice |\n|---|---|---|---|")
    for steps, restored in sorted(recorded.items()):
        t = evaluate(y, np.abs(np.ma.getdata(X) - restored) * foreground, foreground=foreground)
        print(
            f"| {steps} | {t['AUROC', 'pooled']:.3f} | {t['AUPRC', 'pooled']:.3f} | "
            f"{t['Best Dice', 'pooled']:.3f} |"
        )


def main():
    parser = benchmark_parser(__doc__)
    add_protocol_arguments(parser)
    parser.add_argument(
        "--methods", default="flair,vae,gmvae", help="Comma-separated subset of flair, vae, gmvae."
    )
    parser.add_argument(
        "--record-steps", default="", help="Comma-separated step counts for the convergence table."
    )
    add_param_argument(parser, "VAERestorer or GMVAERestorer")
    parser.add_argument(
        "--convergence",
        type=Path,
        metavar="MODEL",
        help="Only measure convergence against --record-steps for a model saved by --json.",
    )
    args = parser.parse_args()
    path = data_folder(args, "lgg_flair")
    if path is None:
        return
    record_steps = [int(s) for s in args.record_steps.split(",") if s]
    if args.convergence:
        convergence_only(args.convergence, path, args.every, record_steps, args.region)
        return
    params = {"random_state": 0, "device": "auto", **dict(args.param)}
    methods = args.methods.split(",")
    protocol = load_protocol(path, args.region, args.every, args.healthy_every)
    train, healthy_val, test, val = (protocol[k] for k in ("train", "healthy_val", "test", "val"))
    print(f"# MAP restoration on {describe(protocol)}\n", flush=True)
    rows, curves, convergence = [], {}, {}
    if "flair" in methods:
        rows.append(flair_row(val, test, args.every)[1])
    from anomseg.restoration import GMVAERestorer, VAERestorer

    for key, cls in (("vae", VAERestorer), ("gmvae", GMVAERestorer)):
        if key not in methods:
            continue
        p = {k: v for k, v in params.items() if k in cls().get_params()}
        r, curves[key], convergence[key], model = restorer_rows(
            cls,
            p,
            train,
            healthy_val,
            test,
            record_steps,
            with_reconstruction=key == "vae",
            prior=equalised_slices(val, args.every, args.healthy_every),
        )
        rows += r
        if args.json:  # keep the model for follow-up measurements
            model.save(args.json.with_suffix(f".{key}.pt"), overwrite=True)
        print(
            f"{cls.__name__}: {model.n_epochs_} epochs (best {model.best_epoch_}), "
            f"{model.training_time_:.0f} s, device {model.device_}",
            flush=True,
        )
    print(f"\n## Quality and cost (Dice at a threshold calibrated at healthy FPR {MAX_FPR:.0%})\n")
    print_table(rows, COLUMNS)
    for key, curve in curves.items():
        print(
            f"\n{key}: healthy change per TV weight: "
            + ", ".join(f"{w:g}: {c:.4f}" for w, c in curve.items())
        )
    if any(convergence.values()):
        print("\n## Convergence: pooled AUROC / AUPRC / best Dice after n restoration steps\n")
        for key, conv in convergence.items():
            for steps, (a, p_, d) in conv.items():
                print(f"{key:6s} {steps:4d} steps: {a:.3f} / {p_:.3f} / {d:.3f}")
    if "gmvae" in methods:
        gm = GMVAERestorer(
            **{k: v for k, v in params.items() if k in GMVAERestorer().get_params()}
        )
        timing = step_timing(gm.get_params())
        (pub_name, pub), (def_name, dflt) = timing.items()
        print("\n## One restoration step (forward, backward, update), same run\n")
        print(f"{pub_name}: {1000 * pub:.2f} ms per slice")
        print(f"{def_name}: {1000 * dflt:.2f} ms per slice")
        print(f"ratio published / default: {pub / dflt:.1f}x")
    write_json(args.json, {"rows": rows, "curves": curves, "convergence": convergence})


if __name__ == "__main__":
    main()
