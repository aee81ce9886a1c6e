"""
Lesions as what a denoising autoencoder removes
===============================================

Kascenas et al. (2022) train a U-Net on healthy slices only to remove coarse,
spatially correlated noise: Gaussian noise drawn on a coarse grid and
upsampled, so that it looks like blurry patches of brighter and darker
tissue. Faced with a lesion, the network treats it as such noise and
removes it; the anomaly map is the residual between the slice and its
denoised version. :class:`~anomseg.denoising.DenoisingAESegmenter`
implements it; scoring is one forward pass per slice.

This example trains it on the lesion-free FLAIR slices of two MSLUB patients
embedded in anomseg and evaluates it on the third, next to the FLAIR
baseline. Its settings are **shrunk for the documentation build**, which
runs every example on a CPU in well under a minute each: a network of depth
3, slices at half resolution and 8 epochs (the estimator's defaults: depth
4, 20 epochs, full resolution). Its numbers show how to use the estimator,
not how good the method is; the README's benchmark tables ("Inside the brain
on LGG FLAIR", where it beats the FLAIR baseline) and
``benchmarks/quality/bench_denoising.py`` give its figures at full settings.
"""

# %%
# Healthy training slices, one patient held out for testing
# ---------------------------------------------------------
# Each *volume* is scaled so that its brain's 90th percentile maps to 1
# (:meth:`~anomseg.preprocessing.IntensityScaler.for_deep_methods`), then cut
# into axial slices; each slice is labelled with its patient, so that ``fit``
# holds out a whole patient to calibrate the threshold on.
import matplotlib.pyplot as plt
import numpy as np

from anomseg.datasets import extract_slices, load_demo_mslub
from anomseg.preprocessing import IntensityScaler

data = load_demo_mslub()
volumes = IntensityScaler.for_deep_methods().fit_transform(data.images)
test = data.subjects.index("patient19")
train = [i for i in range(len(volumes)) if i != test]
healthy = extract_slices(
    [volumes[i] for i in train],
    [data.masks[i] for i in train],
    lesion_free=True,
    min_foreground=2000,
    groups=[data.subjects[i] for i in train],
)
print(f"{len(healthy.images)} lesion-free slices of shape {healthy.images.shape[1:]}")

# %%
# Training at half resolution
# ---------------------------
# A :class:`~anomseg.preprocessing.Resizer` halves the slices, and
# :func:`~anomseg.preprocessing.make_anomaly_pipeline` resizes the maps back
# to the original grid. The noise grid is halved with the slices. The map is
# the *positive* residual (the default): MS lesions are bright in FLAIR.
from anomseg.denoising import DenoisingAESegmenter
from anomseg.preprocessing import Resizer, make_anomaly_pipeline

half = tuple(n // 2 for n in healthy.images.shape[1:])
model = make_anomaly_pipeline(
    Resizer(half),
    DenoisingAESegmenter(
        width=8,
        depth=3,
        noise_resolution=8,
        n_epochs=8,  # shrunk for the docs build
        batch_size=8,
        learning_rate=3e-3,
        max_fpr=0.01,
        device="cpu",
        random_state=0,
    ),
)
model.fit(healthy.images, denoisingaesegmenter__groups=healthy.groups)
dae = model[-1]
print(f"trained {dae.n_epochs_} epochs in {dae.training_time_:.1f} s (kept {dae.best_epoch_})")

fig, ax = plt.subplots(figsize=(5, 3.5))
epochs = [r["epoch"] for r in dae.history_]
ax.plot(epochs, [r["train_loss"] for r in dae.history_], label="training")
ax.plot(epochs, [r["validation_loss"] for r in dae.history_], label="validation (fixed noise)")
ax.set_xlabel("epoch")
ax.set_ylabel("squared error per brain pixel")
ax.set_yscale("log")
ax.legend()
fig.tight_layout()

# %%
# The test patient, next to the FLAIR baseline
# --------------------------------------------
# The test volume is cut into axial slices and scored; the maps are stacked
# back into a volume. The baseline is calibrated at the same 1 % rate on the
# lesion-free brain tissue of the two training patients.
from anomseg.baselines import FlairThreshold
from anomseg.datasets import exclude_lesions
from anomseg.metrics import evaluate
from anomseg.plotting import most_anomalous_slice

volume, truth = volumes[test], data.masks[test]
slices = np.ma.MaskedArray(
    np.moveaxis(np.ma.getdata(volume), -1, 0), mask=np.moveaxis(np.ma.getmaskarray(volume), -1, 0)
)
dae_map = np.moveaxis(model.score_samples(slices), 0, -1)
baseline = FlairThreshold(max_fpr=0.01).fit(
    exclude_lesions([volumes[i] for i in train], [data.masks[i] for i in train], margin=2)
)
flair_map = baseline.score_samples([volume])[0]
brain = ~np.ma.getmaskarray(volume)
for name, m, t in [
    ("denoising AE", dae_map, dae.calibration_thresholds_),
    ("FLAIR baseline", flair_map, baseline.calibration_thresholds_),
]:
    report = evaluate([truth], [m], foreground=[brain], thresholds=t, per_volume=False)
    print(
        f"{name:15s} AUROC {report['AUROC', 'pooled']:.3f}  AUPRC "
        f"{report['AUPRC', 'pooled']:.3f}  best Dice {report['Best Dice', 'pooled']:.3f}"
    )

# %%
# On the slice with the largest lesion area: the input, what the network
# makes of it, the residual, the predicted mask and the ground truth.
k = most_anomalous_slice(truth)
one = slices[k : k + 1]
denoised = model[0].inverse_transform(dae.denoise(model[0].transform(one)))[0]
panels = [
    (np.ma.getdata(one[0]), "input", "gray"),
    (denoised, "denoised", "gray"),
    (dae_map[..., k], "positive residual", "inferno"),
    (model.predict(one)[0], "predicted mask", "gray"),
    (truth[..., k], "ground truth", "gray"),
]
fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
for ax, (panel, title, cmap) in zip(axes, panels):
    vmax = 1.2 if title in ("input", "denoised") else None
    ax.imshow(np.rot90(panel), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()
