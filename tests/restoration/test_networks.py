import math

import numpy as np
import pytest
import torch

from anomseg.restoration import ConvGMVAE, ConvVAE, total_variation
from anomseg.restoration._networks import CLUSTER_KL_FLOOR, LOSS_TERMS, STRIDE

MODULES = [(ConvVAE, {}), (ConvGMVAE, {"n_clusters": 3})]
IDS = ["vae", "gmvae"]


def build(cls, seed=0, **params):
    """A module initialised from its own seed; the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(width=4, **params)


def batch(seed, shape=(3, 1, 30, 34)):
    """Random images in [0, 1] with a rectangular foreground mask."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator)
    mask = torch.zeros(shape[0], 1, *shape[2:])
    mask[..., 4:-5, 3:-6] = 1
    return x, mask


# -- total variation ----------------------------------------------------------
def test_total_variation_equals_hand_computation():
    x = torch.tensor([[[[1.0, 3.0], [0.0, 5.0]]]])
    # vertical |0-1| + |5-3| = 3, horizontal |3-1| + |5-0| = 7
    assert total_variation(x).tolist() == [10.0]
    # per sample, summed over channels
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 2, 5, 7))
    expected = [
        np.abs(np.diff(im, axis=1)).sum() + np.abs(np.diff(im, axis=2)).sum() for im in images
    ]
    got = total_variation(torch.from_numpy(images))
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    # invariant to a constant offset, zero on constant images
    np.testing.assert_allclose(total_variation(torch.from_numpy(images + 3.0)), got)
    assert total_variation(torch.full((2, 1, 4, 4), 7.0)).tolist() == [0.0, 0.0]


def test_total_variation_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(0)
    # continuous random values: no two neighbours tie, so |.| is smooth here
    y = torch.rand(2, 1, 5, 6, generator=generator, dtype=torch.float64)
    x = torch.rand(2, 1, 5, 6, generator=generator, dtype=torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: total_variation(x - y), (x,), eps=1e-7, atol=1e-6)
    # and explicitly: the gradient is the sum of the signs of the differences
    (grad,) = torch.autograd.grad(total_variation(x - y).sum(), x)
    d = (x - y).detach().numpy()[:, 0]
    expected = np.zeros_like(d)
    dh = np.sign(d[:, 1:, :] - d[:, :-1, :])
    dw = np.sign(d[:, :, 1:] - d[:, :, :-1])
    expected[:, 1:, :] += dh
    expected[:, :-1, :] -= dh
    expected[:, :, 1:] += dw
    expected[:, :, :-1] -= dw
    np.testing.assert_array_equal(grad.numpy()[:, 0], expected)


# -- the priors ---------------------------------------------------------------
@pytest.mark.parametrize("cls, params", MODULES, ids=IDS)
@pytest.mark.parametrize("sampled", [False, True], ids=["mean", "sampled"])
def test_negative_elbo_terms_are_finite_and_kl_non_negative(cls, params, sampled):
    module = build(cls, **params)
    x, mask = batch(1)
    generator = torch.Generator().manual_seed(0) if sampled else None
    terms = module.negative_elbo(x, mask, generator=generator)
    assert tuple(terms) == LOSS_TERMS[cls.__name__]
    for name, value in terms.items():
        assert value.shape == (3,), name
        assert torch.isfinite(value).all(), name
        if name.startswith("kl"):
            assert (value >= 0).all(), name
    if cls is ConvGMVAE:
        # the cluster KL is floored per latent position
        latent_positions = math.ceil(30 / STRIDE) * math.ceil(34 / STRIDE)
        assert (terms["kl_clusters"] >= CLUSTER_KL_FLOOR * latent_positions - 1e-4).all()
    # every sample is independent: the loss of one image alone is the same
    if not sampled:
        alone = module.negative_elbo(x[1:2], mask[1:2])
        for name, value in alone.items():
            torch.testing.assert_close(value[0], terms[name][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls, params", MODULES, ids=IDS)
def test_latent_samples_come_from_the_generator(cls, params):
    module = build(cls, **params)
    x, mask = batch(2)

    def loss(seed):
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return sum(module.negative_elbo(x, mask, generator=generator).values())

    torch.testing.assert_close(loss(None), loss(None), rtol=0, atol=0)
    torch.testing.assert_close(loss(5), loss(5), rtol=0, atol=0)
    assert not torch.equal(loss(5), loss(6))
    assert not torch.equal(loss(5), loss(None))


@pytest.mark.parametrize("cls, params", MODULES, ids=IDS)
@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 1, 30, 34), (1, 1, 29, 31)])
def test_restoration_uses_fixed_sigma(cls, params, shape):
    module = build(cls, **params)
    x, mask = batch(3, shape)
    mean = module.reconstruct(x)
    assert mean.shape == x.shape  # cropped back after padding to the stride
    squared = ((x - mean).square() * mask).sum(dim=(1, 2, 3))
    # sigma = 1/sqrt(2): (x - mu)^2 / (2 sigma^2) = (x - mu)^2, no constants
    restoration = module.negative_elbo(x, mask, restoration=True)["reconstruction"]
    torch.testing.assert_close(restoration, squared, rtol=1e-5, atol=1e-5)
    # in training the decoder's own log-precision is used; at initialisation
    # it is exactly 1, so the Gaussian NLL is known in closed form
    training = module.negative_elbo(x, mask)["reconstruction"]
    expected = 0.5 * (squared * math.e + (mask.sum(dim=(1, 2, 3)) * (math.log(2 * math.pi) - 1)))
    torch.testing.assert_close(training, expected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(training, restoration)


@pytest.mark.parametrize("cls, params", MODULES, ids=IDS)
def test_mask_limits_the_reconstruction_term(cls, params):
    module = build(cls, **params)
    x, mask = batch(4)
    empty = module.negative_elbo(x, torch.zeros_like(mask), restoration=True)
    assert (empty["reconstruction"] == 0).all()
    full = module.negative_elbo(x, torch.ones_like(mask), restoration=True)
    part = module.negative_elbo(x, mask, restoration=True)
    assert (full["reconstruction"] > part["reconstruction"]).all()
    # the other terms do not depend on the mask
    for name in LOSS_TERMS[cls.__name__][1:]:
        torch.testing.assert_close(full[name], part[name], rtol=0, atol=0)


@pytest.mark.parametrize("cls, params", MODULES, ids=IDS)
def test_negative_elbo_is_differentiable_in_the_image(cls, params):
    module = build(cls, **params)
    x, mask = batch(5)
    x.requires_grad_(True)
    loss = sum(module.negative_elbo(x, mask, restoration=True).values()).sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # finite differences along a random direction, in float64
    module = module.double()
    x64, mask64 = x.detach().double(), mask.double()
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(x64.shape, generator=generator, dtype=torch.float64)

    def f(t):
        with torch.no_grad():
            terms = module.negative_elbo(x64 + t * direction, mask64, restoration=True)
        return float(sum(terms.values()).sum())

    x64.requires_grad_(True)
    (grad64,) = torch.autograd.grad(
        sum(module.negative_elbo(x64, mask64, restoration=True).values()).sum(), x64
    )
    eps = 1e-6
    numeric = (f(eps) - f(-eps)) / (2 * eps)
    assert float((grad64 * direction).sum()) == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_gmvae_parameters():
    module = build(ConvGMVAE, latent_channels=2, n_clusters=5)
    assert module.n_clusters == 5 and module.latent_channels == 2 and module.width == 4
    # mean and log-precision of each channel and cluster
    assert module.conditional_prior[-1].out_channels == 2 * 2 * 5
    x, mask = batch(6)
    terms = module.negative_elbo(x, mask)
    assert all(torch.isfinite(v).all() for v in terms.values())
