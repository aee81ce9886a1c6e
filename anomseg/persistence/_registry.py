"""The one place where a method is registered.

Each entry names a public estimator by the name the command line uses for
it. From this table come the methods of ``anomseg fit --method`` and their
help, the estimators that the safe model format may rebuild, and the
parameters the command line builds as nested estimators. The classes are
imported when first needed, so ``anomseg --help`` imports no torch.

``tests/test_registry.py`` checks the table against every estimator that
the subpackages export (:func:`anomseg.utils.all_estimators`), and the API
reference (``docs/api.rst``) against the table.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "COMBINERS",
    "METHODS",
    "PRESETS",
    "STEP_MODULES",
    "Method",
    "Preset",
    "estimator_classes",
    "method_class",
    "safe_classes",
]


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes
    ----------
    path : str
        ``"module:Class"`` of its estimator.
    summary : str
        One line for ``anomseg fit --help``.
    nested : dict of str to str
        Parameters that hold another registered method's estimator, which
        the command line builds from ``--param PARAMETER__KEY=VALUE``.
    """

    path: str
    summary: str
    nested: dict = field(default_factory=dict)


METHODS = {
    "flair-threshold": Method(
        "anomseg.baselines:FlairThreshold",
        "the learning-free FLAIR histogram-equalisation baseline (Meissen et al. 2021)",
    ),
    "gmvae": Method(
        "anomseg.restoration:GMVAERestorer",
        "MAP restoration under a Gaussian-mixture VAE prior of healthy slices (You et al. 2019)",
    ),
    "vae": Method(
        "anomseg.restoration:VAERestorer",
        "MAP restoration under a VAE prior of healthy slices (You et al. 2019)",
    ),
    "vae-reconstruction": Method(
        "anomseg.restoration:VAEReconstructor", "the reconstruction residual of a VAE"
    ),
    "ascnet": Method(
        "anomseg.adversarial:ASCNetSegmenter",
        "adversarial selective cutting (Dey and Hong 2021), which also learns "
        "from --unlabelled scans that may hold lesions",
    ),
    "denoising-ae": Method(
        "anomseg.denoising:DenoisingAESegmenter",
        "the residual of a U-Net trained to remove coarse noise from healthy slices "
        "(Kascenas et al. 2022)",
    ),
    "inpainting": Method(
        "anomseg.inpainting:InpaintingLocalizer",
        "sliding-window inpainting heatmaps (Nguyen et al. 2020)",
    ),
    "inpainting-predictor": Method(
        "anomseg.inpainting:InpaintingLossPredictor",
        "the inpainting heatmap predicted by a small network (Mavropoulos 2021)",
        nested={"inpainter": "inpainting"},
    ),
}


@dataclass(frozen=True)
class Preset:
    """A documented combination of methods and options that ``anomseg fit
    --method NAME`` stands for; options given on the command line win.

    Attributes
    ----------
    summary : str
        One line for ``anomseg fit --help``.
    methods : tuple of str
        The registered methods it combines.
    ensemble : int
        Seeds of each learned method (``--ensemble``).
    smoothing : tuple of float or None
        ``--smoothing``.
    max_fpr : float
        ``--max-fpr``.
    """

    summary: str
    methods: tuple
    ensemble: int
    smoothing: tuple | None
    max_fpr: float


#: The presets of ``anomseg fit --method``. "recommended" was chosen on the
#: LGG FLAIR training patients only (benchmarks/quality/sweep_user_lgg.py) and is
#: measured on the validation patients by benchmarks/quality/bench_user_lgg.py.
PRESETS = {
    "recommended": Preset(
        "the recommended default for FLAIR: an ensemble of 3 seeds of denoising-ae and "
        "flair-threshold, maps smoothed by a Gaussian of (2, 2, 1) voxels, calibrated at a "
        "healthy false-positive rate of 0.02 (see the README)",
        ("denoising-ae", "flair-threshold"),
        3,
        (2.0, 2.0, 1.0),
        0.02,
    ),
}

#: Estimators that combine others: not methods of ``anomseg fit --method``
#: (the command line builds them from its options), but estimators that the
#: safe format rebuilds, by class name to ``"module:Class"``.
COMBINERS = {"AnomalyEnsemble": "anomseg.ensemble:AnomalyEnsemble"}

#: The subpackages whose every public class a safe file may rebuild too.
STEP_MODULES = ("anomseg.preprocessing", "anomseg.postprocessing")


def _import(path):
    # The registry names the classes, which sit in the layers above it
    # (tools/import_graph.py), by dotted path: they are imported on first
    # use, so that the command line's --help and the file format import no
    # method, and no method imports the registry back.
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def method_class(name):
    """The estimator class of the method called ``name``."""
    return _import(METHODS[name].path)


def estimator_classes():
    """Class name to class of every registered estimator, the methods and
    the combiners (imports them)."""
    methods = {cls.__name__: cls for cls in map(method_class, METHODS)}
    return methods | {name: _import(path) for name, path in COMBINERS.items()}


class _Classes(Mapping):
    """Class name to class, each class imported when first looked up, so
    that reading a learning-free model imports no torch (every method class
    would)."""

    def __init__(self, paths, classes):
        self._paths, self._classes = paths, dict(classes)

    def __getitem__(self, name):
        if name not in self._classes:
            self._classes[name] = _import(self._paths[name])
        return self._classes[name]

    def __iter__(self):
        return iter({**self._paths, **self._classes})

    def __len__(self):
        return len(self._paths.keys() | self._classes.keys())


def safe_classes():
    """Class name to class of everything a safe model file may rebuild: the
    registered estimators, the preprocessing transformers,
    :class:`~anomseg.preprocessing.AnomalyPipeline` and the mask filters of
    :mod:`anomseg.postprocessing` (imports the latter; an estimator's class
    is imported when first looked up)."""
    classes = {}
    for module in map(importlib.import_module, STEP_MODULES):  # by name, as in _import
        public = (getattr(module, name) for name in module.__all__)
        classes.update({cls.__name__: cls for cls in public if isinstance(cls, type)})
    paths = [method.path for method in METHODS.values()] + list(COMBINERS.values())
    return _Classes({path.split(":")[1]: path for path in paths}, classes)
