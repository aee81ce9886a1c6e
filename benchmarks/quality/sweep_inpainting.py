"""A sweep of the inpainting localiser inside the brain: why its heatmap
does not reach the FLAIR baseline on LGG.

Run from the repository root::

    OMP_NUM_THREADS=1 python -m benchmarks.quality.sweep_inpainting [--every 12] \
        [--config "{'n_steps': 50}"] [--json sweep.json]

Each configuration (``--config``, a Python dict literal of
:class:`~anomseg.inpainting.InpaintingLocalizer` parameters, repeatable;
by default three of them) trains its own generator on the shared protocol
(``benchmarks/_lgg.py``) and scores every ``--every``-th validation slice
with the exact heatmap; the figures are threshold-free (AUROC, AUPRC, best
Dice), of the heatmap alone and times the equalised FLAIR intensity.
``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import ast
import time

from benchmarks._common import benchmark_parser, data_folder, print_table, write_json
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

#: Configurations tried: generator training length and window geometry.
#: The default (2000 steps, window 8 px) is in ``bench_inpainting.py``.
CONFIGS = [
    {"n_steps": 10},
    {"n_steps": 200},
    {"n_steps": 200, "window_size": 16, "context_size": 64},
]


def config(text):
    """A ``--config``: a dict literal of InpaintingLocalizer parameters."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a dict literal; got {text!r}")
    return value


def main():
    parser = benchmark_parser(__doc__)
    add_protocol_arguments(parser, every=12, healthy_every=False)
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        type=config,
        help="A configuration (a Python dict literal); repeatable.",
    )
    args = parser.parse_args()
    path = data_folder(args, "lgg_flair")
    if path is None:
        return
    from anomseg.inpainting import InpaintingLocalizer

    protocol = load_protocol(path, args.region, args.every)
    print(f"# Inpainting sweep on {describe(protocol)}\n", flush=True)
    _, eq_test = equalised_slices(protocol["val"], args.every)
    test = protocol["test"]
    rows = [flair_row(protocol["val"], test, args.every)[1]]
    configs = args.config or CONFIGS
    X, _, groups = protocol["train"]
    for settings in configs:
        model = InpaintingLocalizer(random_state=0, **settings)
        model.fit(X, groups=groups, calibrate=False)
        start = time.perf_counter()
        maps = model.score_samples(test[0])
        seconds = (time.perf_counter() - start) / len(maps)
        name = f"InpaintingLocalizer {settings}"
        extra = {"train s": model.training_time_}
        rows.append(scored_row(name, maps, protocol, None, seconds, extra))
        rows.append(prior_row("  x equalised FLAIR", test, maps, eq_test))
        print(f"done: {name}, {model.training_time_:.0f} s", flush=True)
    print_table(rows, COLUMNS)
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
