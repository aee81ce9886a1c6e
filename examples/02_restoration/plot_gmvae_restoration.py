"""
Lesions as what restoration removes: a GMVAE prior of healthy slices
====================================================================

You et al. (2019) train a Gaussian-mixture VAE (GMVAE) on healthy brain
slices only, as a normative prior of healthy anatomy. A new slice Y is then
*restored*: starting from X = Y, gradient ascent on

.. math:: \\mathrm{ELBO}(X) - \\lambda \\, \\mathrm{TV}(X - Y)

moves X towards what the prior considers healthy, while the total variation
of the change keeps it piecewise smooth. The anomaly map is what the
restoration removed, ``|Y - X|``. :class:`~anomseg.restoration.GMVAERestorer`
implements it.

This example trains it on lesion-free FLAIR slices of two MSLUB patients
embedded in anomseg and evaluates it on the third, next to the FLAIR
baseline. Its settings are **shrunk for the documentation build**, which
runs every example on a CPU in well under a minute each: an 8-channel network
trained for 15 epochs on every other healthy slice of one patient, slices at half
the in-plane resolution, a TV weight chosen on 4 slices from a grid of 5, and
only the 12 test slices around the largest lesion area restored. The
estimator's defaults are a 16-channel network, 40 epochs, and the TV weight
chosen on 16 slices from a grid of 20. Restoration takes the default "fast" schedule, 45 momentum
steps, which matched the paper's 500 plain ones on LGG FLAIR. Its numbers
show how to use and diagnose the estimator, not how good the method is: the
README's benchmark tables ("Inside the brain on LGG FLAIR") give its figures
at full settings, and the full protocol of the paper
(:meth:`~anomseg.restoration.GMVAERestorer.published`, many healthy
subjects, ``schedule="paper"``) is for the scripts in ``benchmarks/``.
"""

# %%
# Healthy training slices, one patient held out for testing
# ---------------------------------------------------------
# :func:`~anomseg.datasets.load_demo_mslub` returns the FLAIR volumes of three
# patients, their brains as the unmasked part. The restoration's step sizes
# suit intensities of about [0, 1], so each *volume* is scaled with
# :class:`~anomseg.preprocessing.IntensityScaler` (its brain's 90th percentile
# maps to 1, brighter lesions stay above it), before it is cut into slices:
# scaling slice by slice would stretch the contrast of each slice differently.
#
# We test on patient19, whose lesion load (4.6 % of the brain) makes the
# figures below readable, and train on the lesion-free axial slices of the
# other two, keeping only slices with enough brain to learn from.
# :func:`~anomseg.datasets.extract_slices` labels each slice with its
# patient, so that ``fit`` holds out a whole patient, here one of the two, to
# calibrate the TV weight and the threshold on; the network learns from the
# other.
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
# Shrunk for the docs build: every other slice.
healthy.images, healthy.groups = healthy.images[::2], healthy.groups[::2]
for subject in np.unique(healthy.groups):
    print(f"{subject}: {np.sum(healthy.groups == subject)} lesion-free slices")
print(f"slices of shape {healthy.images.shape[1:]}")

# %%
# A small GMVAE, on slices at half resolution
# -------------------------------------------
# Restoration costs one forward and one backward pass of the network per slice
# and step, for every slice of the test volume and for every candidate TV
# weight on the calibration slices. To keep this on a CPU, a
# :class:`~anomseg.preprocessing.Resizer` halves the in-plane resolution;
# :func:`~anomseg.preprocessing.make_anomaly_pipeline` resizes the maps back,
# so they are evaluated on the original 1 mm grid, like the baseline's.
#
# ``tv_weight="auto"`` chooses the TV weight as You et al. do, on the held-out
# healthy patient (next section). The threshold is calibrated on the same
# slices at a voxel false-positive rate of 1 %, the operating point of the
# FLAIR baseline example. The seed goes through ``random_state`` only.
#
# The network and its training (width, learning rate, early stopping) were
# chosen on the two training patients only, by the validation loss and the
# healthy change below; the test patient's labels played no part.
from anomseg.preprocessing import Resizer, make_anomaly_pipeline
from anomseg.restoration import GMVAERestorer

half = tuple(n // 2 for n in healthy.images.shape[1:])
model = make_anomaly_pipeline(
    Resizer(half),
    GMVAERestorer(
        width=8,
        n_clusters=9,
        n_epochs=15,  # shrunk for the docs build
        batch_size=8,
        learning_rate=3e-3,
        patience=5,
        tv_weights=(0, 0.5, 1, 2, 3),
        tv_search="grid",  # every weight, to plot the whole curve below
        max_tv_images=4,  # shrunk for the docs build
        max_fpr=0.01,
        device="cpu",
        random_state=0,
    ),
)
model.fit(healthy.images, gmvaerestorer__groups=healthy.groups)
gmvae = model[-1]
print(
    f"trained {gmvae.n_epochs_} epochs in {gmvae.training_time_:.1f} s "
    f"(kept epoch {gmvae.best_epoch_}); tv_weight_ = {gmvae.tv_weight_:g}, "
    f"threshold_ = {gmvae.threshold_:.4f}"
)

# %%
# ``history_`` holds one record per epoch: the negative ELBO per brain pixel
# on the training slices and on the slices held out for early stopping.
epochs = [record["epoch"] for record in gmvae.history_]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(epochs, [r["train_loss"] for r in gmvae.history_], label="training")
ax.plot(epochs, [r["validation_loss"] for r in gmvae.history_], label="validation")
ax.axvline(gmvae.best_epoch_, color="k", linestyle=":", label="weights kept")
ax.set_xlabel("epoch")
ax.set_ylabel("negative ELBO per brain pixel")
ax.legend()
fig.tight_layout()

# %%
# Choosing the TV weight on healthy slices
# ----------------------------------------
# On healthy slices, restoration should change nothing. You et al. pick the
# weight lambda that minimises the mean absolute change it causes there,
# epsilon(lambda): too small a weight lets the image drift towards what the
# prior reconstructs best, too large a one stops it from moving at all, or
# makes the TV subgradient oscillate. ``tv_weights_`` and ``healthy_change_``
# hold the curve, measured on the held-out patient's slices. By default
# (``tv_search="golden"``) a golden-section search finds the minimum while
# restoring at only some of the weights (8 of the default 20); this example
# asks for the whole grid to draw it.
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(gmvae.tv_weights_, gmvae.healthy_change_, "o-")
ax.axvline(
    gmvae.tv_weight_, color="k", linestyle=":", label=f"chosen tv_weight_ = {gmvae.tv_weight_:g}"
)
ax.set_xlabel("TV weight lambda")
ax.set_ylabel("mean absolute change per brain pixel")
ax.set_title("epsilon(lambda) on healthy calibration slices")
ax.legend()
fig.tight_layout()

# %%
# Restoring the test patient
# --------------------------
# To keep the docs build short, only a slab of the test volume is restored:
# the 12 axial slices around its largest lesion area (the volume has 127).
# The slab is cut into its axial slices; ``score_samples`` returns one map per
# slice on the original grid, which we stack back into a volume.
from anomseg.plotting import most_anomalous_slice

centre = most_anomalous_slice(data.masks[test])
slab = slice(centre - 6, centre + 6)
volume, truth = volumes[test][..., slab], data.masks[test][..., slab]
slices = np.ma.MaskedArray(
    np.moveaxis(np.ma.getdata(volume), -1, 0),
    mask=np.moveaxis(np.ma.getmaskarray(volume), -1, 0),
)
gmvae_map = np.moveaxis(model.score_samples(slices), 0, -1)

# %%
# On the slice with the largest lesion area: the input, its restoration
# (``restore`` works at the model's resolution, so the resizer maps it back
# for display), the residual map, the mask ``predict`` returns and the ground
# truth.
k = most_anomalous_slice(truth)
one = slices[k : k + 1]
restored = model[0].inverse_transform(gmvae.restore(model[0].transform(one)))[0]
predicted = model.predict(one)[0]

panels = [
    (np.ma.getdata(one[0]), "input", "gray"),
    (restored, "restored", "gray"),
    (gmvae_map[..., k], "residual |Y - X|", "inferno"),
    (predicted, "predicted mask", "gray"),
    (truth[..., k], "ground truth", "gray"),
]
fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
for ax, (panel, title, cmap) in zip(axes, panels):
    vmax = 1.2 if title in ("input", "restored") else None
    ax.imshow(np.rot90(panel), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
fig.suptitle(f"{data.subjects[test]}, axial slice {slab.start + k}")
fig.tight_layout()

# %%
# Against the FLAIR baseline on the same patient
# ----------------------------------------------
# :class:`~anomseg.baselines.FlairThreshold` is calibrated, at the same 1 %
# false-positive rate, on the lesion-free brain tissue of the same two
# training patients (lesions dilated by two voxels; see the FLAIR baseline
# example). Both maps are evaluated with :func:`~anomseg.metrics.evaluate` on
# the brain voxels of the test patient's slab. AUROC, AUPRC and best Dice need no
# threshold chosen in advance (best Dice is an *oracle*, its threshold picked
# on the test labels); Dice at the healthy-calibrated thresholds is what a
# user would get. Nothing here was tuned on the test patient's labels.
from anomseg.baselines import FlairThreshold
from anomseg.datasets import exclude_lesions
from anomseg.metrics import evaluate

baseline = FlairThreshold(max_fpr=0.01).fit(
    exclude_lesions([volumes[i] for i in train], [data.masks[i] for i in train], margin=2)
)
flair_map = baseline.score_samples([volumes[test]])[0][..., slab]

brain = ~np.ma.getmaskarray(volume)
reports = {
    name: evaluate([truth], [m], foreground=[brain], thresholds=t, per_volume=False)
    for name, m, t in [
        ("GMVAE restoration", gmvae_map, gmvae.calibration_thresholds_),
        ("FLAIR baseline", flair_map, baseline.calibration_thresholds_),
    ]
}
rows = [(r.metric, r.threshold) for r in reports["FLAIR baseline"].results]
width = max(len(f"{m} ({t})") for m, t in rows)
print(f"{'':{width}}  " + "  ".join(f"{name:>17}" for name in reports))
for metric, threshold in rows:
    values = "  ".join(
        f"{report[metric, 'pooled', threshold]:17.3f}" for report in reports.values()
    )
    print(f"{f'{metric} ({threshold})':{width}}  {values}")

# %%
# Reading the numbers
# -------------------
# At this scale the GMVAE is far behind the baseline, and the figure above
# shows one reason. The brightest residuals need not be lesions: the prior has
# seen the healthy slices of a single patient, and restores towards *that*
# anatomy whatever it has not seen, such as the larger ventricles of the test
# patient (dark CSF fills about three times as much of its brain as in the
# other two), which the absolute residual ``|Y - X|`` counts
# as anomalous as much as a lesion. (For lesions known to be hyper-intense, as
# MS lesions are in FLAIR, ``residual="positive"`` keeps only
# ``max(Y - X, 0)``.) The threshold calibrated at a 1 % false-positive rate
# on the other patient's healthy slices lies above most lesion residuals,
# hence the Dice near 0 at that rate; the oracle best Dice shows what a
# better-placed threshold could reach.
#
# The figures also vary with the seed: a network this small, trained on a few
# dozen slices, lands in rather different places from one ``random_state`` to
# the next, and so does every metric above. You et al. trained 64-channel
# networks on the slices of many healthy subjects and restored them for 500
# steps. Use this example for the API and for the diagnostics it
# shows (the loss curve, epsilon(lambda), restored slices), and the
# benchmarks for the method's merit.
