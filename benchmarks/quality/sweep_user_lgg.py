"""The sweep behind the recommended default, on the training patients only.

The choices of the recommended default (which method, which settings, how
many members, which calibrated FPR and post-processing) are made here on an
**inner split of the 60 training patients** of LGG FLAIR: 32 to fit on (their
tumours excluded, as ``anomseg fit --exclude`` does), 8 to calibrate on and
20 to evaluate on.
The 20 validation patients, on which ``bench_user_lgg.py`` reports, are
never looked at. Everything goes through the public API, with the
preprocessing of ``anomseg fit`` (nonzero foreground of skull-stripped
scans, each scan scaled for the deep methods).

Stage 1, ``maps``: fit each configuration of ``--configs`` (and seed) on the
inner training patients, and keep its maps of the inner evaluation
patients (with the quantiles of its healthy calibration scores, from which
an ensemble combines members) in ``WORKDIR/sweep``.

Stage 2, ``report``: threshold-free figures (pooled AUROC, AUPRC, best Dice)
of each configuration, of seed ensembles and of mixed ensembles, combined
as :class:`~anomseg.ensemble.AnomalyEnsemble` combines them.

Stage 3, ``ensemble``: the seed ensemble (``--members`` DAE seeds and the
FLAIR baseline) fitted once, then calibrated for each variant (exclusion
of the calibration patients' lesions, smoothing, post-processing), with
the per-scan Dice of the masks ``predict`` returns at several FPRs.

Run from the repository root::

    python -m benchmarks.quality.sweep_user_lgg maps --configs dae dae-w16 --seeds 0 1 2
    python -m benchmarks.quality.sweep_user_lgg report --json sweep.json
    python -m benchmarks.quality.sweep_user_lgg ensemble --members 3 --seeds 0

The skull-stripped scans are those ``bench_user_lgg.py`` prepares in the
same ``--workdir``; ``--json`` writes the rows of the stage run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from anomseg.baselines import FlairThreshold
from anomseg.denoising import DenoisingAESegmenter
from anomseg.restoration import GMVAERestorer
from benchmarks._common import benchmark_parser, data_folder, write_json
from benchmarks.quality.bench_user_lgg import prepare

#: name: (description, seeded, estimator class, its parameters, exclusion).
SLICES = {"whole_slices": True}
VOXELS = {"margin": 2}
DAE = DenoisingAESegmenter
CONFIGS = {
    "flair": ("FLAIR baseline", False, FlairThreshold, {}, VOXELS),
    "dae": ("DAE width 8, 20 epochs", True, DAE, {}, SLICES),
    "dae-whole": ("DAE, whole slices", True, DAE, {"crop_margin": None}, SLICES),
    "dae-voxels": ("DAE trained with lesion holes (margin 2)", True, DAE, {}, VOXELS),
    "dae-w16": ("DAE width 16", True, DAE, {"width": 16}, SLICES),
    "dae-e40": ("DAE 40 epochs", True, DAE, {"n_epochs": 40}, SLICES),
    "dae-e10": ("DAE 10 epochs", True, DAE, {"n_epochs": 10}, SLICES),
    "gmvae": ("GMVAE restoration", True, GMVAERestorer, {}, SLICES),
}


def inner_split(files, seed=0):
    """The 60 training patients as 32 to train on, 8 to calibrate on and 20
    to evaluate on (what ``fit`` does inside, with its 20 % held out, made
    explicit so that variants can be calibrated again)."""
    scans, masks = files["train"]
    order = np.random.default_rng(seed).permutation(len(scans))
    pick = lambda idx: ([scans[i] for i in sorted(idx)], [masks[i] for i in sorted(idx)])  # noqa: E731
    return pick(order[28:]), pick(order[20:28]), pick(order[:20])


def fit_model(name, seed, fit_files):
    from anomseg.preprocessing import IntensityScaler, make_anomaly_pipeline
    from anomseg.utils import LesionExclusion

    _, seeded, cls, params, exclusion = CONFIGS[name]
    estimator = cls(**params, **({"random_state": seed} if seeded else {}))
    steps = [IntensityScaler.for_deep_methods()] if cls is not FlairThreshold else []
    model = make_anomaly_pipeline(*steps, estimator)
    scans, masks = fit_files
    started = time.perf_counter()
    step = model.steps[-1][0]
    model.fit(scans, exclude=LesionExclusion(masks, **exclusion), **{f"{step}__calibrate": False})
    return model, time.perf_counter() - started


def calibrate(model, volumes, masks, exclusion):
    """Calibrate ``model`` on the healthy parts of ``volumes``; returns
    what the sweep keeps of it."""
    from anomseg.utils import LesionExclusion

    model.calibrate(volumes, exclude=LesionExclusion(masks, **exclusion))
    final = model[-1]
    return {
        "quantile_value": np.asarray(final.healthy_quantiles_["value"]),
        "quantile_tail": np.asarray(final.healthy_quantiles_["tail"]),
        "thresholds": np.asarray([final.calibration_thresholds_[r] for r in RATES]),
    }


RATES = (0.01, 0.05, 0.1)


def stage_maps(args, files):
    """Stage 1; returns the fit and scoring seconds of the runs made."""
    from anomseg.io import load_mask, load_nifti

    fit_files, (cal_scans, cal_masks), (scans, masks) = inner_split(files)
    cal_volumes = [load_nifti(s)[0] for s in cal_scans]
    cal_lesions = [load_mask(m)[0] for m in cal_masks]
    out = args.workdir / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    truth_file = out / "truth.npz"
    if not truth_file.exists():
        volumes = [load_nifti(s)[0] for s in scans]
        np.savez_compressed(
            truth_file,
            **{f"truth{i}": load_mask(m)[0] for i, m in enumerate(masks)},
            **{f"fg{i}": v != 0 for i, v in enumerate(volumes)},
        )
    rows = []
    for name in args.configs:
        seeds = args.seeds if CONFIGS[name][1] else [None]
        for seed in seeds:
            target = out / f"{name}-seed{seed}.npz"
            if target.exists():
                continue
            model, seconds = fit_model(name, seed, fit_files)
            final = model[-1]
            exclusion = CONFIGS[name][4]
            variants = {"": calibrate(model, cal_volumes, cal_lesions, exclusion)}
            has_prior = getattr(final, "intensity_prior", None) is False
            if has_prior:
                final.set_params(intensity_prior=True)
                variants["prior_"] = calibrate(model, cal_volumes, cal_lesions, exclusion)
            saved = {}
            started = time.perf_counter()
            for prefix, calibration in variants.items():
                final.set_params(**({"intensity_prior": prefix == "prior_"} if has_prior else {}))
                saved.update({f"{prefix}{k}": v for k, v in calibration.items()})
                for i, scan in enumerate(scans):
                    volume = load_nifti(scan)[0]
                    saved[f"{prefix}map{i}"] = model.score_samples([volume])[0].astype(np.float32)
            score_seconds = time.perf_counter() - started
            np.savez_compressed(target, **saved, fit_seconds=seconds, score_seconds=score_seconds)
            print(
                f"{name} seed {seed}: fit {seconds:.0f} s, scoring {score_seconds:.0f} s",
                flush=True,
            )
            rows.append(
                {"config": name, "seed": seed, "fit s": seconds, "scoring s": score_seconds}
            )
    return rows


# -- stage 2 ----------------------------------------------------------------------------
def _neg_log_tail(data, prefix="", n=None):
    """A member's maps as the ensemble combines them: ``-log10`` of their
    healthy tail probability, from its calibration quantiles."""
    from anomseg._calibration import TailTransform

    transform = TailTransform(
        {
            "value": data[f"{prefix}quantile_value"].tolist(),
            "tail": data[f"{prefix}quantile_tail"].tolist(),
        }
    )
    return [-transform.log(data[f"{prefix}map{i}"]) / np.log(10) for i in range(n)]


def figures(truths, fgs, maps):
    from anomseg.metrics import evaluate

    report = evaluate(truths, maps, foreground=fgs, per_volume=False)
    return {k: report[k, "pooled"] for k in ("AUROC", "AUPRC", "Best Dice")}


def stage_report(args):
    """Stage 2; returns its rows."""
    out = args.workdir / "sweep"
    truth = np.load(out / "truth.npz")
    n = len([k for k in truth.files if k.startswith("truth")])
    truths = [truth[f"truth{i}"] for i in range(n)]
    fgs = [truth[f"fg{i}"] for i in range(n)]
    runs = {}
    for path in sorted(out.glob("*-seed*.npz")):
        name, seed = path.stem.rsplit("-seed", 1)
        runs.setdefault(name, {})[seed] = np.load(path)
    rows = []

    def add(label, maps, fit_seconds=None):
        r = figures(truths, fgs, maps)
        rows.append({"configuration": label, **r, "fit s": fit_seconds})
        extra = "" if fit_seconds is None else f"{fit_seconds:.0f}"
        print(
            f"| {label} | {r['AUROC']:.3f} | {r['AUPRC']:.3f} | {r['Best Dice']:.3f} | {extra} |",
            flush=True,
        )

    print("| configuration | AUROC | AUPRC | best Dice | fit s |\n|---|---|---|---|---|")
    flair = runs.get("flair", {}).get("None")
    flair_member = None if flair is None else _neg_log_tail(flair, n=n)
    mean = lambda members: [np.mean(m, axis=0) for m in zip(*members)]  # noqa: E731
    for name, seeds in runs.items():
        for seed, data in seeds.items():
            maps = [data[f"map{i}"] for i in range(n)]
            add(f"{name} seed {seed}", maps, float(data["fit_seconds"]))
            if "prior_map0" in data.files:
                add(f"{name} seed {seed} x FLAIR", [data[f"prior_map{i}"] for i in range(n)])
        if len(seeds) < 2:
            continue
        for prefix, label in (("", ""), ("prior_", " x FLAIR")):
            if f"{prefix}map0" not in next(iter(seeds.values())).files:
                continue
            members = [_neg_log_tail(d, prefix, n) for d in seeds.values()]
            for k in range(2, len(members) + 1):
                add(f"{name}{label}: ensemble of seeds {k}", mean(members[:k]))
            if flair_member is not None:
                add(f"{name}{label}: {len(members)} seeds + FLAIR", mean([*members, flair_member]))
    return rows


# -- stage 3 ----------------------------------------------------------------------------
#: The calibration variants of stage 3: exclusion of the calibration
#: patients' lesions, smoothing, post-processing.
CALIBRATIONS = {
    "slices": SLICES,
    "voxels, margin 2": VOXELS,
}
SMOOTHINGS = {"none": None, "(2, 2, 1)": (2.0, 2.0, 1.0)}
MIN_SIZES = (0, 50, 200)
#: The calibrated FPRs compared.
STAGE_RATES = (0.01, 0.02, 0.03, 0.05, 0.1)


def stage_ensemble(args, files):
    """Fit the seed ensemble (DAE seeds and the FLAIR baseline) once on the
    inner training patients, then calibrate it for every variant on the
    inner calibration patients, and report the per-scan Dice of the masks
    that ``predict`` returns on the inner evaluation patients; returns the
    rows."""
    import joblib

    from anomseg.ensemble import AnomalyEnsemble
    from anomseg.ensemble._ensemble import seed_members
    from anomseg.io import load_mask, load_nifti
    from anomseg.postprocessing import ConnectedComponentFilter
    from anomseg.preprocessing import IntensityScaler, make_anomaly_pipeline
    from anomseg.utils import LesionExclusion

    (scans, masks), (cal_scans, cal_masks), (val_scans, val_masks) = inner_split(files)
    out = args.workdir / "sweep"
    cache = out / f"ensemble-{args.members}-seed{args.seeds[0]}.joblib"
    if cache.exists():
        model, seconds = joblib.load(cache)
    else:
        members = seed_members(DenoisingAESegmenter(), args.members, args.seeds[0], "dae")
        ensemble = AnomalyEnsemble([*members, ("flair", FlairThreshold())], n_jobs=args.n_jobs)
        model = make_anomaly_pipeline(IntensityScaler.for_deep_methods(), ensemble)
        started = time.perf_counter()
        model.fit(
            scans,
            exclude=LesionExclusion(masks, whole_slices=True),
            anomalyensemble__calibrate=False,
        )
        seconds = time.perf_counter() - started
        joblib.dump((model, seconds), cache)
    print(f"ensemble of {args.members} DAE seeds + FLAIR: fit {seconds:.0f} s", flush=True)
    cal = [load_nifti(s)[0] for s in cal_scans]
    cal_lesions = [load_mask(m)[0] for m in cal_masks]
    volumes = [load_nifti(s)[0] for s in val_scans]
    truths = [load_mask(m)[0] for m in val_masks]
    fgs = [v != 0 for v in volumes]
    columns = ["model", "calibrated on", "smoothing", "min size", "AUPRC", "best Dice"]
    columns += [f"Dice@{r:.0%}" for r in STAGE_RATES] + ["healthy FPR@5% (evaluated)"]
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    rows = []
    flair = make_anomaly_pipeline(FlairThreshold())
    for label, candidate in (("FLAIR baseline", flair), ("ensemble", model)):
        final = candidate[-1]
        for smoothing_name, smoothing in SMOOTHINGS.items():
            for calibration_name, exclusion in CALIBRATIONS.items():
                # The members' tail probabilities depend on their calibration.
                final.set_params(smoothing=smoothing, postprocessing=None)
                exclude = LesionExclusion(cal_lesions, **exclusion)
                if candidate is flair:
                    candidate.fit(cal, exclude=exclude)
                else:
                    candidate.calibrate(cal, exclude=exclude)
                maps = [candidate.score_samples([v])[0] for v in volumes]
                for min_size in MIN_SIZES:
                    steps = [ConnectedComponentFilter(min_size=min_size)] if min_size else None
                    final.set_params(postprocessing=steps)
                    values = _calibrated_row(candidate, cal, exclude, maps, truths, fgs)
                    rows.append(
                        dict(zip(columns, [label, calibration_name, smoothing_name, min_size]))
                        | dict(zip(columns[4:], values))
                    )
                    cells = [label, calibration_name, smoothing_name, str(min_size)]
                    cells += [f"{v:.3f}" for v in values[:-1]] + [f"{values[-1]:.4f}"]
                    print("| " + " | ".join(cells) + " |", flush=True)
    return rows


def _calibrated_row(model, cal, exclude, maps, truths, fgs):
    """AUPRC, best Dice, per-scan Dice of ``predict``'s masks at each rate
    of ``STAGE_RATES``, and the healthy voxels' FPR at 5 %."""
    from anomseg.metrics import evaluate

    final = model[-1]
    thresholds = {}
    for extra in sorted(set(STAGE_RATES) - {0.01, 0.05, 0.1}):  # those are always there
        final.set_params(max_fpr=extra)
        model.calibrate(cal, exclude=exclude)
        thresholds.update(final.calibration_thresholds_)
    thresholds = {rate: thresholds[rate] for rate in STAGE_RATES}
    final.set_params(max_fpr=0.05)
    report = evaluate(
        truths, maps, foreground=fgs, thresholds=thresholds, postprocess=final.postprocess_mask
    )
    dice = [
        r.value for r in report.results if r.metric == "Dice" and r.aggregation == "per-volume"
    ]
    masks = [final.postprocess_mask((m > thresholds[0.05]) & fg) for m, fg in zip(maps, fgs)]
    healthy = np.concatenate([k[fg & ~t] for k, fg, t in zip(masks, fgs, truths)])
    return [report["AUPRC", "pooled"], report["Best Dice", "pooled"], *dice, healthy.mean()]


def main():
    parser = benchmark_parser(__doc__)
    parser.add_argument("stage", choices=("maps", "report", "ensemble"))
    parser.add_argument("--members", type=int, default=3, help="DAE seeds of the ensemble.")
    parser.add_argument("--n-jobs", type=int, default=None, help="Members trained at once.")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/anomseg-user-lgg"))
    parser.add_argument("--configs", nargs="+", default=["flair", "dae"], choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    if data_folder(args, "lgg_flair") is None:
        return
    if args.stage == "maps":
        rows = stage_maps(args, prepare(args.data, args.workdir))
    elif args.stage == "ensemble":
        rows = stage_ensemble(args, prepare(args.data, args.workdir))
    else:
        rows = stage_report(args)
    write_json(args.json, {"stage": args.stage, "rows": rows})


if __name__ == "__main__":
    main()
