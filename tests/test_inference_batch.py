"""inference_batch_size="auto": the batch of each torch estimator on the CPU
(its size before "auto" existed) and on a GPU (larger), resolved for the
device the model runs on."""

import numpy as np
import pytest

from anomseg import load_model
from anomseg.adversarial import ASCNetSegmenter
from anomseg.datasets import make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.inpainting import InpaintingLocalizer, InpaintingLossPredictor
from anomseg.restoration import GMVAERestorer, VAEReconstructor, VAERestorer

#: The batch that each estimator used before "auto", on the CPU, and the
#: one it uses on a GPU.
SIZES = {
    ASCNetSegmenter: (64, 512),
    DenoisingAESegmenter: (64, 512),
    VAEReconstructor: (64, 512),
    VAERestorer: (16, 128),
    GMVAERestorer: (16, 128),
    InpaintingLocalizer: (512, 4096),
    InpaintingLossPredictor: (16, 128),
}


@pytest.mark.parametrize("cls", list(SIZES), ids=lambda c: c.__name__)
def test_auto_is_the_cpu_batch_on_the_cpu_and_larger_on_a_gpu(cls):
    est = cls()
    assert est.get_params()["inference_batch_size"] == "auto"
    cpu, gpu = SIZES[cls]
    est.device_ = "cpu"
    assert est.inference_batch_size_ == cpu
    for device in ("cuda", "cuda:1"):
        est.device_ = device
        assert est.inference_batch_size_ == gpu
    est.set_params(inference_batch_size=8)
    assert est.inference_batch_size_ == 8  # a size given is the size used, anywhere


def test_auto_scores_as_the_cpu_batch_did_and_is_kept_in_the_model_file(tmp_path):
    healthy = make_healthy_images(n_images=10, shape=(32, 32), random_state=0)
    unseen = make_healthy_images(n_images=70, shape=(32, 32), random_state=1)
    params = {"width": 4, "depth": 2, "noise_resolution": 8, "n_epochs": 1, "random_state": 0}
    auto = DenoisingAESegmenter(**params).fit(healthy)
    explicit = DenoisingAESegmenter(**params, inference_batch_size=64).fit(healthy)
    # 70 slices: one batch of 64 and the rest, in both
    np.testing.assert_array_equal(auto.score_samples(unseen), explicit.score_samples(unseen))
    assert auto.threshold_ == explicit.threshold_
    loaded = load_model(auto.save(tmp_path / "dae.anomseg"))
    assert loaded.inference_batch_size == "auto" and loaded.inference_batch_size_ == 64


@pytest.mark.parametrize("bad", ["big", 0, 2.5])
def test_a_bad_inference_batch_size_is_named(bad):
    healthy = make_healthy_images(n_images=4, shape=(32, 32), random_state=0)
    with pytest.raises(ValueError, match=r"'inference_batch_size'.*'auto'"):
        DenoisingAESegmenter(inference_batch_size=bad).fit(healthy)
