"""The LGG FLAIR protocol that every learned-method benchmark shares.

On the LGG FLAIR set at 128 x 128 (``../shared/data/lgg_flair``):

* every volume is restricted to its **brain mask** (``region="brain"``, the
  default: the published methods all work on skull-stripped scans) or to its
  head (``region="head"``, :class:`ForegroundMasker`), and scaled by the 90th
  percentile of those voxels (unclipped, :meth:`IntensityScaler.for_deep_methods`)
  as a whole, then cut into axial slices whose background is 0;
* methods train on the tumour-free slices of the ``train`` patients;
* thresholds (and hyper-parameters such as the TV weight) are calibrated on
  the tumour-free slices of the ``validation`` patients, without any lesion
  label;
* metrics cover all slices of the ``validation`` patients, pooled over their
  brain (or head) voxels, and per patient;
* the FLAIR histogram-equalisation baseline (Meissen et al.) is measured on
  exactly the same voxels, its threshold calibrated the same way.

The tumour-free slices lie mostly at the ends of the volumes, which biases
the "healthy" set; in the top 1-2 slices of some thick-slice volumes the
brain masks still hold a little skull.
"""

from __future__ import annotations

import time

import numpy as np

from anomseg.baselines import FlairThreshold
from anomseg.datasets import apply_brain_masks, exclude_lesions, extract_slices, load_lgg_flair
from anomseg.metrics import calibrate_thresholds, evaluate
from anomseg.preprocessing import ForegroundMasker, IntensityScaler
from benchmarks._common import peak_memory_mib, reset_peak_memory

MAX_FPR = 0.05
RATES = (0.01, 0.05, 0.1)
REGIONS = ("brain", "head")
#: The label of the thresholds calibrated at ``MAX_FPR`` in a metric table.
CALIBRATED = f"calibrated on healthy data at FPR {MAX_FPR:.0%}"


# -- data -------------------------------------------------------------------------
def prepare(path, split, region="brain"):
    """Masked, per-volume scaled LGG volumes of a split, their tumour masks
    and patient ids."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}; got {region!r}")
    data = load_lgg_flair(path, split=split)
    if region == "brain":
        masked = apply_brain_masks(data.images, data.brain_masks)
    else:
        masked = ForegroundMasker().fit_transform(data.images)
    scaled = IntensityScaler.for_deep_methods().fit_transform(masked)
    return scaled, data.masks, list(data.subjects)


def slices(volumes, masks, subjects, lesion_free):
    """Axial slices (masked, background 0), their tumour masks and groups."""
    s = extract_slices(volumes, masks, lesion_free=lesion_free, groups=subjects)
    X = np.ma.stack(s.images)
    X = np.ma.MaskedArray(np.ma.filled(X, 0.0), mask=np.ma.getmaskarray(X))
    return X, np.asarray(s.masks), np.asarray(s.groups)


def add_protocol_arguments(parser, every=1, healthy_every=True):
    """``--region``, ``--every`` (default ``every``) and, if
    ``healthy_every``, ``--healthy-every``: the options of
    :func:`load_protocol`."""
    parser.add_argument(
        "--region",
        choices=REGIONS,
        default="brain",
        help="Work inside the brain masks (default, as published) or the head.",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=every,
        help=f"Evaluate every k-th validation slice only (default {every}; 1: all).",
    )
    if healthy_every:
        parser.add_argument(
            "--healthy-every",
            type=int,
            default=1,
            help="Calibrate on every k-th tumour-free validation slice only (1: all).",
        )


# -- rows --------------------------------------------------------------------------
def per_patient_dice(table):
    r = next(
        r
        for r in table.results
        if (r.metric, r.aggregation, r.threshold) == ("Dice", "per-volume", CALIBRATED)
    )
    return r.value, r.sd


def row(name, table, seconds, extra):
    """A table's figures; the calibrated Dice cells only if the table has
    them (maps evaluated with thresholds)."""
    out = {
        "method": name,
        "AUROC": table["AUROC", "pooled"],
        "AUPRC": table["AUPRC", "pooled"],
        "best Dice": table["Best Dice", "pooled"],
    }
    if any(r.threshold == CALIBRATED for r in table.results):
        out["Dice@5% pooled"] = table["Dice", "pooled", CALIBRATED]
        out["Dice@5% per patient"] = per_patient_dice(table)
    return {**out, "s/slice": seconds, **extra}


def flair_row(val, test, every):
    """The FLAIR baseline on the same voxels as the learned methods.

    It equalises whole volumes over their masked voxels, as published; its
    threshold is calibrated on the same volumes with their tumour slices
    masked out (``exclude_lesions(..., whole_slices=True)``), which leaves the
    tumour-free slices of the validation patients, the calibration set of
    the learned methods. ``test`` must be ``slices(*val, lesion_free=None)``
    thinned by ``every``.
    """
    volumes, masks, _subjects = val
    healthy = exclude_lesions(volumes, masks, whole_slices=True)
    model = FlairThreshold(max_fpr=MAX_FPR).fit(healthy)
    reset_peak_memory()
    start = time.perf_counter()
    maps = model.score_samples(volumes)
    seconds = (time.perf_counter() - start) / sum(v.shape[-1] for v in volumes)
    peak = peak_memory_mib()
    maps = np.concatenate([np.moveaxis(m, -1, 0) for m in maps])[::every]
    X, y, groups = test
    table = evaluate(
        y,
        maps,
        foreground=~np.ma.getmaskarray(X),
        thresholds=model.calibration_thresholds_,
        groups=groups,
    )
    return (
        table,
        row(
            "FLAIR baseline (Meissen et al.)",
            table,
            seconds,
            {
                "steps": 0,
                "train s": 0.0,
                "peak MiB": peak,
                "tv_weight": None,
                "threshold": model.threshold_,
            },
        ),
        maps,
    )


def load_protocol(path, region="brain", every=1, healthy_every=1):
    """Everything a benchmark needs: ``train`` slices (tumour-free, of the
    train patients, with groups), ``train_all`` (every train slice),
    ``healthy_val`` (tumour-free validation slices, every
    ``healthy_every``-th), ``test`` (every ``every``-th validation slice with
    masks and groups) and ``val`` (the validation volumes, for the FLAIR
    baseline)."""
    train_volumes = prepare(path, "train", region)
    val = prepare(path, "validation", region)
    train = slices(*train_volumes, lesion_free=True)
    train_all = slices(*train_volumes, lesion_free=None)
    healthy_val = slices(*val, lesion_free=True)[0][::healthy_every]
    test = tuple(a[::every] for a in slices(*val, lesion_free=None))
    return {
        "train": train,
        "train_all": train_all,
        "healthy_val": healthy_val,
        "test": test,
        "val": val,
        "region": region,
        "every": every,
    }


def describe(protocol):
    train, healthy_val, test = protocol["train"], protocol["healthy_val"], protocol["test"]
    return (
        f"LGG FLAIR (128 x 128), inside the {protocol['region']}: {len(train[0])} tumour-free "
        f"training slices of {len(set(train[2]))} patients, {len(healthy_val)} tumour-free "
        f"validation slices for calibration, {len(test[0])} evaluation slices of "
        f"{len(set(test[2]))} patients ({int(test[1].sum())} tumour pixels, "
        f"{int((~np.ma.getmaskarray(test[0])).sum())} {protocol['region']} pixels)"
    )


#: Columns of the shared table.
COLUMNS = [
    "method",
    "AUROC",
    "AUPRC",
    "best Dice",
    "Dice@5% pooled",
    "Dice@5% per patient",
    "s/slice",
    "train s",
    "peak MiB",
]


def scored_row(name, maps, protocol, thresholds, seconds, extra=None):
    """The row of maps of the test slices."""
    X, y, groups = protocol["test"]
    table = evaluate(
        y, maps, foreground=~np.ma.getmaskarray(X), thresholds=thresholds, groups=groups
    )
    return row(name, table, seconds, extra or {})


# -- the intensity prior -------------------------------------------------------------
def equalised_slices(val, every=1, healthy_every=1):
    """The FLAIR baseline's per-volume equalised intensity of the validation
    volumes ``val`` (from :func:`prepare`), cut like the healthy calibration
    slices and the test slices: ``(eq_healthy, eq_test)``, plain arrays."""
    volumes, masks, subjects = val
    eq = FlairThreshold().fit(volumes).score_samples(volumes)
    eq = [np.ma.MaskedArray(e, mask=np.ma.getmaskarray(v)) for e, v in zip(eq, volumes)]
    healthy = np.ma.getdata(slices(eq, masks, subjects, lesion_free=True)[0])
    test = np.ma.getdata(slices(eq, masks, subjects, lesion_free=None)[0])
    return healthy[::healthy_every], test[::every]


def prior_row(name, test, test_maps, eq_test, healthy=None, extra=None):
    """The row of a method's maps times the equalised FLAIR intensity (the
    intensity prior that FLAIR lesions are bright). ``healthy`` is
    ``(healthy_slices, their maps, eq_healthy)`` to calibrate thresholds on,
    or None for threshold-free figures only (the calibrated Dice cells stay
    empty)."""
    X, y, groups = test
    thresholds = None
    if healthy is not None:
        slices_h, maps_h, eq_h = healthy
        fg = ~np.ma.getmaskarray(slices_h)
        thresholds = calibrate_thresholds((np.asarray(maps_h) * eq_h)[fg], RATES)
    table = evaluate(
        y,
        np.asarray(test_maps) * eq_test,
        foreground=~np.ma.getmaskarray(X),
        thresholds=thresholds,
        groups=groups,
    )
    out = {
        "method": name,
        "AUROC": table["AUROC", "pooled"],
        "AUPRC": table["AUPRC", "pooled"],
        "best Dice": table["Best Dice", "pooled"],
        **(extra or {}),
    }
    if thresholds is not None:
        out["Dice@5% pooled"] = table["Dice", "pooled", CALIBRATED]
        out["Dice@5% per patient"] = per_patient_dice(table)
    return out
