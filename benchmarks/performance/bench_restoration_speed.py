"""Speed of MAP restoration: the fast schedule against the paper's, the TV
weight search against the full grid, and the FLOP rate of one step.

Run from the repository root, one prior per process (each on one thread)::

    OMP_NUM_THREADS=1 python -m benchmarks.performance.bench_restoration_speed --kind vae \
      --healthy-every 2 --models /tmp/models --json vae_speed.json
    OMP_NUM_THREADS=1 python -m benchmarks.performance.bench_restoration_speed --kind gmvae \
      --healthy-every 2 --models /tmp/models --json gmvae_speed.json

(about 20 minutes each on one thread, the two side by side on 2 cores).

``--models DIR`` keeps the trained priors (``lgg.vae.anomseg`` and so on)
and loads them when they are there, so a rerun measures restoration only;
``--param KEY=VALUE`` changes their training (width 16, 15 epochs).

For each data set and prior, in one process:

1. **The TV weight.** ``tv_weight="auto"`` on the calibration slices, with
   the golden-section search (the default) and with the full 20-value grid
   of the reference code, both restoring with the fast schedule: the weights
   chosen, the healthy change epsilon(lambda) of each, and the time of each
   search against one scoring pass (restoring every calibration slice once,
   which ``calibrate`` does for the threshold).
2. **Quality at the same cost of setup.** The evaluation slices restored at
   the chosen weight with the paper's schedule (500 plain steps, 5e-3 then
   2e-3, clip 100) and with the fast one (45 momentum steps): pooled AUROC,
   AUPRC and best Dice inside the brain, Dice at the threshold calibrated
   on the healthy slices at 5 % FPR (fast schedule only: calibrating the
   paper's would restore every calibration slice 500 times), seconds per
   slice and the ratio of the two, measured one after the other in the
   same process. Both restore at the weight the default search chose with
   the fast schedule, so that only the schedule differs.
3. **FLOP rate.** One restoration step (forward, backward and update of
   ``map_restore``, float32) on the prior's device, at batches of 64 and
   128 slices and at the estimator's ``inference_batch_size`` (the batches
   that scoring restores; small batches mislead on a GPU, where a step of
   16 slices is mostly kernel launches): its FLOPs per slice
   (``torch.utils.flop_counter``), its milliseconds per slice (5 steps in one
   call after a warm-up step, the device synchronised before the clock
   stops), and its rate as a fraction of a dense 2048 x 2048 float32
   ``torch.matmul`` timed in the same process on the same device and
   threads; then the operators that take the time (``torch.profiler``) at
   the largest batch.

The data:

* **LGG FLAIR**, the shared protocol of ``benchmarks/_lgg.py`` inside the brain masks:
  priors trained on the tumour-free slices of the training patients
  (width 16, 15 epochs), calibration on the tumour-free validation slices
  (every ``--healthy-every``-th), evaluation on every ``--every``-th
  validation slice.
* **MSLUB**, the copy embedded in anomseg (3 patients, skull-stripped,
  132 x 165 axial slices): each volume scaled by the 90th percentile of its
  brain; the lesion-free slices with at least 2000 brain pixels are split
  alternately into training and calibration slices; every 6th slice with
  a lesion is evaluated. Training and evaluation slices come from the same
  three patients (there are no others), so these figures compare the two
  schedules on one model; they are not a generalisation result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from anomseg import load_model
from anomseg.metrics import evaluate
from benchmarks._common import add_param_argument, benchmark_parser, data_folder, write_json
from benchmarks._lgg import CALIBRATED, MAX_FPR, load_protocol, slices

#: The priors' training, as in the restoration benchmark.
TRAINING = {"width": 16, "n_epochs": 15, "random_state": 0, "device": "auto"}


# -- data ---------------------------------------------------------------------------
def lgg(path, every, healthy_every):
    protocol = load_protocol(path, "brain", every, healthy_every)
    return {
        "name": "LGG FLAIR, brain",
        "train": protocol["train"][0],
        "calibration": protocol["healthy_val"],
        "test": protocol["test"][:2],
    }


def mslub():
    from anomseg.datasets import load_demo_mslub
    from anomseg.preprocessing import IntensityScaler

    data = load_demo_mslub()
    masked = [np.ma.masked_equal(np.asarray(v, dtype=np.float32), 0) for v in data.images]
    scaled = IntensityScaler.for_deep_methods().fit_transform(masked)
    subjects = list(data.subjects)
    healthy = slices(scaled, data.masks, subjects, lesion_free=True)[0]
    healthy = healthy[(~np.ma.getmaskarray(healthy)).sum(axis=(1, 2)) >= 2000]
    X, y, _ = slices(scaled, data.masks, subjects, lesion_free=None)
    with_lesion = np.flatnonzero(y.reshape(len(y), -1).any(axis=1))[::6]
    return {
        "name": "MSLUB (embedded), brain",
        "train": healthy[0::2],
        "calibration": healthy[1::2],
        "test": (X[with_lesion], y[with_lesion]),
    }


# -- measurements ---------------------------------------------------------------------
def trained(kind, data, key, models, training):
    from anomseg.restoration import GMVAERestorer, VAERestorer

    cls = {"vae": VAERestorer, "gmvae": GMVAERestorer}[kind]
    path = models / f"{key}.{kind}.anomseg" if models else None
    if path is not None and path.exists():
        model = load_model(path)
        print(f"loaded {path}", flush=True)
    else:
        model = cls(**training, tv_weight=1.0).fit(data["train"])
        print(f"trained {kind} on {key}: {model.training_time_:.0f} s", flush=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            model.save(path, overwrite=True)
    # the defaults of today, whatever the file was saved with
    defaults = cls().get_params()
    return model.set_params(
        tv_weights=defaults["tv_weights"],
        max_tv_images=defaults["max_tv_images"],
        inference_batch_size=defaults["inference_batch_size"],
        schedule="fast",
        n_restoration_steps=None,
        step_sizes=None,
        step_size_switch=None,
        tv_weight="auto",
        verbose=0,
    )


def tv_search(model, calibration):
    """Both searches, each by ``calibrate``, the default's last (so that its
    weight and threshold stay); the time of one scoring pass."""
    out = {}
    for search in ("grid", "golden"):
        model.set_params(tv_search=search)
        start = time.perf_counter()
        model.calibrate(calibration)
        total = time.perf_counter() - start
        out[search] = {
            "tv_weight": model.tv_weight_,
            "weights": model.tv_weights_.tolist(),
            "change": model.healthy_change_.tolist(),
            "search s": model.tv_search_time_,
            "scoring pass s": total - model.tv_search_time_,
            "evaluated": len(model.tv_weights_),
        }
    return out


def quality(model, test):
    X, y = test
    foreground = ~np.ma.getmaskarray(X)
    rows = {}
    for schedule in ("paper", "fast"):
        model.set_params(schedule=schedule)
        start = time.perf_counter()
        restored = model.restore(X)
        seconds = (time.perf_counter() - start) / len(X)
        maps = np.abs(np.ma.getdata(X) - restored) * foreground
        thresholds = model.calibration_thresholds_ if schedule == "fast" else None
        table = evaluate(y, maps, foreground=foreground, thresholds=thresholds)
        row = {
            "schedule": schedule,
            "steps": model.restoration_schedule()["n_restoration_steps"],
            "AUROC": table["AUROC", "pooled"],
            "AUPRC": table["AUPRC", "pooled"],
            "best Dice": table["Best Dice", "pooled"],
            "s/slice": seconds,
        }
        if thresholds is not None:
            row[f"Dice@{MAX_FPR:.0%}"] = table["Dice", "pooled", CALIBRATED]
        rows[schedule] = row
    model.set_params(schedule="fast")
    return rows


def flop_rate(model, batch_sizes, shape=(128, 128), repeats=5):
    """FLOPs and time of one restoration step of ``model``'s network, on its
    device, per slice at each of ``batch_sizes``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from anomseg.restoration import map_restore, total_variation
    from benchmarks.performance.bench_throughput import matmul_rate, synchronize

    module = model.module_.to(memory_format=torch.channels_last)
    device = next(module.parameters()).device
    peak = matmul_rate(2048, device) / 1e9
    out = {
        "matmul peak GFLOP/s": peak,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batches": {},
    }
    for n in batch_sizes:
        generator = torch.Generator(device).manual_seed(0)
        y = torch.rand(n, 1, *shape, generator=generator, device=device).contiguous(
            memory_format=torch.channels_last
        )
        mask = torch.ones(n, 1, *shape, device=device)
        lam = torch.full((n,), 2.0, device=device)
        x = y.clone().requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            loss = sum(module.negative_elbo(x, mask, restoration=True).values())
            (loss + lam * total_variation(x - y)).sum().backward()
        flops = counter.get_total_flops()
        map_restore(module, y, mask, lam, [1e-3], 100.0, momentum=0.9)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        map_restore(module, y, mask, lam, [1e-3] * repeats, 100.0, momentum=0.9)
        synchronize(device)
        seconds = (time.perf_counter() - start) / repeats
        out["batches"][n] = {
            "MFLOP/slice": flops / n / 1e6,
            "ms/slice": 1000 * seconds / n,
            "GFLOP/s": flops / seconds / 1e9,
            "of peak": flops / seconds / 1e9 / peak,
        }
    n = max(batch_sizes)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        map_restore(module, y, mask, lam, [1e-3] * 2, 100.0, momentum=0.9)
    events = prof.key_averages()
    # on a GPU the time is the kernels', not the CPU's that launched them
    timer = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, timer) for e in events)
    top = sorted(events, key=lambda e: getattr(e, timer), reverse=True)[:8]
    out["profile"] = [(e.key, getattr(e, timer) / total) for e in top]
    out["profile batch"] = n
    return out


# -- printing ----------------------------------------------------------------------------
def print_report(kind, results, flops):
    print(f"\n## {kind}: the paper's schedule against the fast one, same model and slices\n")
    print("| data | schedule | steps | AUROC | AUPRC | best Dice | Dice@5% | s/slice |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        for s in ("paper", "fast"):
            q = r["quality"][s]
            dice = f"{q[f'Dice@{MAX_FPR:.0%}']:.3f}" if f"Dice@{MAX_FPR:.0%}" in q else ""
            print(
                f"| {name} | {s} | {q['steps']} | {q['AUROC']:.3f} | {q['AUPRC']:.3f} | "
                f"{q['best Dice']:.3f} | {dice} | {q['s/slice']:.3f} |"
            )
        paper, fast = r["quality"]["paper"], r["quality"]["fast"]
        print(
            f"| {name} | fast vs paper | | {fast['AUROC'] - paper['AUROC']:+.3f} | "
            f"{fast['AUPRC'] / paper['AUPRC'] - 1:+.1%} | "
            f"{fast['best Dice'] / paper['best Dice'] - 1:+.1%} | | "
            f"**{paper['s/slice'] / fast['s/slice']:.1f}x faster** |"
        )
    print(f"\n## {kind}: the TV weight, golden-section search against the full grid\n")
    print(
        "| data | search | weights evaluated | chosen | its change | search s | "
        "one scoring pass s | search / pass |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        for s in ("golden", "grid"):
            t = r["tv"][s]
            chosen = t["change"][t["weights"].index(t["tv_weight"])]
            print(
                f"| {name} | {s} | {t['evaluated']} | {t['tv_weight']:g} | {chosen:.4f} | "
                f"{t['search s']:.1f} | {t['scoring pass s']:.1f} | "
                f"{t['search s'] / t['scoring pass s']:.2f} |"
            )
        grid = r["tv"]["grid"]
        golden = r["tv"]["golden"]
        best = min(grid["change"])
        mine = grid["change"][grid["weights"].index(golden["tv_weight"])]
        print(
            f"| {name} | golden vs grid | | "
            f"{'same' if golden['tv_weight'] == grid['tv_weight'] else 'differs'} | "
            f"{mine / best - 1:+.2%} | | | |"
        )
    for name, r in results.items():
        for s in ("grid", "golden"):
            t = r["tv"][s]
            print(
                f"\n{name}, {s}: "
                + ", ".join(f"{w:g}: {c:.4f}" for w, c in zip(t["weights"], t["change"]))
            )
    print(
        f"\n## {kind}: one restoration step (forward, backward, update) at 128 x 128, "
        f"{flops['device']}, {flops['threads']} thread(s)\n"
    )
    print(f"dense matmul peak, same process: {flops['matmul peak GFLOP/s']:.1f} GFLOP/s\n")
    print("| batch | MFLOP/slice | ms/slice | GFLOP/s | of peak |\n|---|---|---|---|---|")
    for n, b in flops["batches"].items():
        print(
            f"| {n} | {b['MFLOP/slice']:.1f} | {b['ms/slice']:.2f} | {b['GFLOP/s']:.1f} | "
            f"{b['of peak']:.0%} |"
        )
    print(f"\nself {flops['device']} time by operator (batch {flops['profile batch']}):")
    for key, share in flops["profile"]:
        print(f"  {share:6.1%} {key}")


def main():
    parser = benchmark_parser(__doc__)
    parser.add_argument("--kind", choices=("vae", "gmvae"), default="vae")
    parser.add_argument("--sets", default="lgg,mslub", help="Comma-separated: lgg, mslub.")
    parser.add_argument("--every", type=int, default=20, help="Every k-th LGG evaluation slice.")
    parser.add_argument(
        "--healthy-every", type=int, default=1, help="Every k-th LGG calibration slice."
    )
    parser.add_argument("--models", type=Path, help="Keep and reuse trained priors here.")
    add_param_argument(parser, "VAERestorer or GMVAERestorer (training)")
    args = parser.parse_args()
    training = {**TRAINING, **dict(args.param)}

    sets = {}
    for key in args.sets.split(","):
        if key == "lgg":
            path = data_folder(args, "lgg_flair")
            if path is not None:
                sets[key] = lgg(path, args.every, args.healthy_every)
        elif key == "mslub":
            sets[key] = mslub()
    results, model = {}, None
    for key, data in sets.items():
        print(
            f"# {data['name']}: {len(data['train'])} training, {len(data['calibration'])} "
            f"calibration and {len(data['test'][0])} evaluation slices "
            f"({int(data['test'][1].sum())} lesion pixels)",
            flush=True,
        )
        model = trained(args.kind, data, key, args.models, training)
        tv = tv_search(model, data["calibration"])
        print(f"  TV weight: {tv['golden']['tv_weight']:g} (golden)", flush=True)
        results[data["name"]] = {"tv": tv, "quality": quality(model, data["test"])}
        print(json.dumps(results[data["name"]]), flush=True)  # in case a later set fails
    flops = flop_rate(model, sorted({64, 128, model.inference_batch_size_}))
    print_report(args.kind, results, flops)
    write_json(args.json, {"results": results, "flops": flops})


if __name__ == "__main__":
    main()
