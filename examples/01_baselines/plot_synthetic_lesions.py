"""
Synthetic lesions and the calibrated false-positive rate
========================================================

Synthetic lesions have exact ground truth, and synthetic healthy images are
unlimited: together they show what the estimator contract promises. The mask
threshold ``threshold_`` is calibrated on healthy images at a false-positive
rate ``max_fpr`` of our choosing, so on *unseen* healthy images the masks
flag about that fraction of the foreground.

We run :class:`~anomseg.baselines.FlairThreshold` inside an
:class:`~anomseg.preprocessing.AnomalyPipeline` that first crops the images
to the foreground: the maps and masks still come back in the geometry of the
input.
"""

# %%
# Healthy images and images with lesions
# --------------------------------------
# :func:`~anomseg.datasets.make_healthy_images` draws toy "brains": a textured
# ellipse on a zero background, so the foreground is the non-zero pixels.
# :func:`~anomseg.datasets.add_synthetic_lesions` adds hyper-intense blobs to
# copies of other healthy images and returns exactly the pixels it changed.
import matplotlib.pyplot as plt
import numpy as np

from anomseg.datasets import add_synthetic_lesions, make_healthy_images

healthy_train = make_healthy_images(32, shape=(96, 96), random_state=0)
healthy_unseen = make_healthy_images(32, shape=(96, 96), random_state=1)
X_test, truth = add_synthetic_lesions(
    make_healthy_images(8, shape=(96, 96), random_state=2),
    n_lesions=(1, 3),
    radius=(3, 7),
    contrast=0.4,
    shape="blob",
    random_state=3,
)
print(f"lesion pixels per test image: {truth.sum(axis=(1, 2))}")

# %%
# A pipeline fitted on healthy images only
# ----------------------------------------
# :func:`~anomseg.preprocessing.make_anomaly_pipeline` chains transformers
# and an anomaly estimator. :class:`~anomseg.preprocessing.ForegroundCropper`
# learns the bounding box of the healthy foregrounds in ``fit``; the pipeline
# applies its exact inverse to the anomaly maps. ``fit`` sees healthy images
# only: FlairThreshold learns nothing, so all of them calibrate the
# threshold.
from anomseg.baselines import FlairThreshold
from anomseg.preprocessing import ForegroundCropper, make_anomaly_pipeline

max_fpr = 0.02
pipeline = make_anomaly_pipeline(ForegroundCropper(margin=2), FlairThreshold(max_fpr=max_fpr)).fit(
    healthy_train
)
cropper = pipeline.named_steps["foregroundcropper"]
print(f"images cropped from {cropper.input_shape_} to {cropper.output_shape_}")
print(f"threshold_ = {pipeline.threshold_:.4f}")

maps = pipeline.score_samples(X_test)
masks = pipeline.predict(X_test)
print(f"maps {maps.shape}, masks {masks.shape}: the input's geometry")

# %%
# Maps and masks
# --------------
# Each 2D image is equalised on its own, so its brightest pixels score close
# to 1. The cyan contour on the anomaly map is ``threshold_``. The baseline's
# limit shows: a lesion in dark tissue can score below bright healthy tissue
# elsewhere in the image, and bright healthy tissue is flagged.
from anomseg.plotting import plot_anomaly_overview

figure = plot_anomaly_overview(
    X_test[:4], maps[:4], masks[:4], truth[:4], threshold=pipeline.threshold_
)

# %%
# The false-positive rate on unseen healthy images
# ------------------------------------------------
# The promise of the calibration: on healthy images the pipeline has never
# seen, the fraction of foreground pixels flagged is close to ``max_fpr``.
# It is not exactly ``max_fpr``: the threshold was computed on other images.
foreground_unseen = healthy_unseen != 0
flagged = pipeline.predict(healthy_unseen)
per_image = flagged.sum(axis=(1, 2)) / foreground_unseen.sum(axis=(1, 2))
print(f"max_fpr = {max_fpr}")
print(
    f"false-positive rate on unseen healthy images: {flagged[foreground_unseen].mean():.4f}"
    f" (per image {per_image.min():.4f} to {per_image.max():.4f})"
)

fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(np.arange(len(per_image)), per_image, color="tab:blue")
ax.axhline(max_fpr, color="k", linestyle="--", label="max_fpr")
ax.set_xlabel("unseen healthy image")
ax.set_ylabel("false-positive rate")
ax.legend()
fig.tight_layout()

# %%
# And on the images with lesions
# ------------------------------
# Lesions are what the threshold lets through. The metric table counts
# foreground pixels only; ``calibration_thresholds_`` of the fitted
# estimator adds Dice at thresholds calibrated on healthy data at 1, 2, 5
# and 10 %.
from anomseg.metrics import evaluate

report = evaluate(
    truth,
    maps,
    foreground=X_test != 0,
    thresholds=pipeline[-1].calibration_thresholds_,
)
print(report)

# %%
# Post-processing lowers the false-positive rate further
# ------------------------------------------------------
# Healthy false positives of a quantile threshold are scattered pixels.
# ``min_component_size`` removes connected components of the mask smaller
# than that many pixels. ``threshold_`` is calibrated before this filtering,
# so on healthy images the filtered rate can only be lower than ``max_fpr``;
# lesions larger than the minimum size are kept, so here the Dice barely
# changes.
filtered = make_anomaly_pipeline(
    ForegroundCropper(margin=2), FlairThreshold(max_fpr=max_fpr, min_component_size=10)
).fit(healthy_train)
flagged = filtered.predict(healthy_unseen)
print(
    f"with min_component_size=10: false-positive rate on unseen healthy images "
    f"{flagged[foreground_unseen].mean():.4f}"
)
from anomseg.metrics import dice_score

foreground_test = X_test != 0
print(
    f"Dice at healthy FPR {100 * max_fpr:g} %: {dice_score(truth, masks, foreground_test):.3f} "
    f"unfiltered, {dice_score(truth, filtered.predict(X_test), foreground_test):.3f} filtered"
)
