"""Benchmarks of anomseg, measured as a user gets the figures (the public
API and the ``anomseg`` command line), one folder per kind:

* ``quality/``: how well each method segments (LGG FLAIR, MSLUB), against
  the FLAIR baseline, and the sweeps behind the defaults;
* ``performance/``: time and memory (fit and score times, ``anomseg fit``
  and ``anomseg predict`` at cohort scale, restoration speed);
* ``robustness/``: what an interrupted ``anomseg predict`` leaves behind;
* ``data/``: the script that builds the demo data embedded in anomseg.

Run each as a module from the repository root, so that it imports the
anomseg of this checkout and the shared helpers::

    python -m benchmarks.quality.bench_flair_baseline --json flair.json
    python -m benchmarks.quality.bench_denoising --help

Every benchmark takes ``--json PATH`` (its figures as JSON) and, where it
reads data, ``--data`` (the shared data folder, by default
``../shared/data`` beside the repository); ``--param KEY=VALUE`` sets an
estimator parameter where a benchmark trains one. The shared pieces are
``_common.py`` (command line, JSON, tables, memory) and ``_lgg.py`` (the
LGG FLAIR protocol of the learned methods).
"""
