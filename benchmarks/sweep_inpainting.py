"""A sweep of the inpainting localiser inside the brain: why its heatmap
does not reach the FLAIR baseline on LGG.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/sweep_inpainting.py [--every 12]

Each configuration trains its own generator on the shared protocol
(``_lgg.py``) and scores every ``--every``-th validation slice with the
exact heatmap; the figures are threshold-free (AUROC, AUPRC, best Dice),
of the heatmap alone and times the equalised FLAIR intensity.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

from _lgg import (
    DEFAULT_DATA,
    add_region_argument,
    describe,
    equalised_slices,
    flair_row,
    load_protocol,
    print_table,
    prior_row,
    scored_row,
)

#: Configurations tried: generator training length and window geometry.
#: The default (2000 steps, window 8 px) is in ``bench_inpainting.py``.
CONFIGS = [
    {"n_steps": 10},
    {"n_steps": 200},
    {"n_steps": 200, "window_size": 16, "context_size": 64},
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="The shared data folder.")
    add_region_argument(parser)
    parser.add_argument("--every", type=int, default=12, help="Evaluate every k-th slice only.")
    parser.add_argument(
        "--config", action="append", default=[], help="A configuration (a Python dict literal)."
    )
    args = parser.parse_args()
    from anomseg.inpainting import InpaintingLocalizer

    protocol = load_protocol(args.data / "lgg_flair", args.region, args.every)
    print(f"# Inpainting sweep on {describe(protocol)}\n", flush=True)
    _, eq_test = equalised_slices(protocol["val"], args.every)
    test = protocol["test"]
    rows = [flair_row(protocol["val"], test, args.every)[1]]
    configs = [ast.literal_eval(c) for c in args.config] or CONFIGS
    X, _, groups = protocol["train"]
    for config in configs:
        model = InpaintingLocalizer(random_state=0, **config)
        model.fit(X, groups=groups, calibrate=False)
        start = time.perf_counter()
        maps = model.score_samples(test[0])
        seconds = (time.perf_counter() - start) / len(maps)
        name = f"InpaintingLocalizer {config}"
        extra = {"train s": model.training_time_}
        rows.append(scored_row(name, maps, protocol, None, seconds, extra))
        rows.append(prior_row("  x equalised FLAIR", test, maps, eq_test))
        print(f"done: {name}, {model.training_time_:.0f} s", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
