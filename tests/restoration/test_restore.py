import pytest
import torch
from torch import nn

from anomseg.restoration import ConvVAE, golden_section_argmin, map_restore, total_variation
from anomseg.restoration._restore import golden_section_evaluations, step_size_schedule


class Quadratic(nn.Module):
    """A prior whose negative ELBO is ||x - target||^2 over the mask, so
    restoration has a closed form."""

    def __init__(self, target):
        super().__init__()
        self.register_buffer("target", target)

    def negative_elbo(self, x, mask, generator=None, restoration=False):
        assert restoration
        return {"reconstruction": ((x - self.target).square() * mask).sum(dim=(1, 2, 3))}


def images_and_masks(seed, n=2, shape=(12, 10)):
    generator = torch.Generator().manual_seed(seed)
    y = torch.rand(n, 1, *shape, generator=generator)
    mask = torch.zeros(n, 1, *shape)
    mask[..., 2:-3, 3:-2] = 1
    return y, mask


@pytest.fixture(scope="module")
def vae():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = ConvVAE(width=4)
    return module.eval()


def test_step_size_schedule():
    assert step_size_schedule(5, (0.1, 0.01), 2) == [0.1, 0.1, 0.01, 0.01, 0.01]
    assert step_size_schedule(3, (0.1, 0.01), 0) == [0.01] * 3
    assert step_size_schedule(3, (0.1, 0.01), 10) == [0.1] * 3


def test_gradient_descent_on_a_known_loss():
    y, mask = images_and_masks(0)
    target = torch.rand(y.shape, generator=torch.Generator().manual_seed(1))
    steps = [0.1, 0.1, 0.05]
    restored, recorded = map_restore(
        Quadratic(target), y, mask, torch.zeros(2), steps, gradient_clip=1e3
    )
    assert recorded == {}
    expected = y.clone()
    for s in steps:  # x <- x - s * 2 (x - t) in the foreground
        expected = expected - s * 2 * (expected - target) * mask
    torch.testing.assert_close(restored, expected)
    assert not restored.requires_grad
    # moved towards the target in the foreground, untouched elsewhere
    fg = mask.bool().expand_as(y)
    assert ((restored - target).abs()[fg] < (y - target).abs()[fg]).all()
    assert torch.equal(restored[~fg], y[~fg])


def test_gradient_clipping_bounds_each_step():
    y, mask = images_and_masks(0)
    far = Quadratic(y + 10.0)  # gradient -20 everywhere in the foreground
    step, clip = 0.05, 2.0
    restored, recorded = map_restore(
        far, y, mask, torch.zeros(2), [step] * 3, gradient_clip=clip, record_steps=[1, 2]
    )
    fg = mask.bool().expand_as(y)
    previous = y
    for x in (recorded[1], recorded[2], restored):
        change = x - previous
        # the gradient exceeds the clip everywhere: every step is exactly step*clip
        torch.testing.assert_close(change[fg], torch.full_like(change[fg], step * clip))
        assert (change[~fg] == 0).all()
        previous = x


def test_background_untouched_and_input_unchanged(vae):
    y, mask = images_and_masks(2, n=3, shape=(20, 24))
    original = y.clone()
    restored, _ = map_restore(vae, y, mask, torch.tensor([0.0, 0.5, 2.0]), [0.05] * 5, 100.0)
    fg = mask.bool().expand_as(y)
    # the background is seen by the encoder but never changed
    assert torch.equal(restored[~fg], y[~fg])
    assert (restored[fg] != y[fg]).float().mean() > 0.5
    assert torch.equal(y, original)  # no in-place update of the input
    # descending the loss never computes gradients of the weights
    assert all(p.grad is None for p in vae.parameters())


def test_clip_bounds_change_with_a_real_prior(vae):
    y, mask = images_and_masks(3)
    step, clip = 0.1, 1e-3
    restored, recorded = map_restore(
        vae, y, mask, torch.zeros(2), [step] * 4, clip, record_steps=[1]
    )
    first = (recorded[1] - y).abs()
    tolerance = 1e-6  # float32 rounding of x - 1e-4 near 1
    assert first.max() <= step * clip + tolerance
    # the raw gradient is far larger than the clip, so most pixels hit it
    fg = mask.bool().expand_as(y)
    assert (first[fg] > 0.99 * step * clip).float().mean() > 0.5
    assert (restored - y).abs().max() <= 4 * (step * clip + tolerance)


def test_restoration_decreases_the_objective(vae):
    y, mask = images_and_masks(4, n=2, shape=(16, 16))
    weights = torch.tensor([0.0, 0.2])

    def objective(x):
        with torch.no_grad():
            terms = vae.negative_elbo(x, mask, restoration=True)
            return sum(terms.values()) + weights * total_variation(x - y)

    restored, recorded = map_restore(
        vae, y, mask, weights, [1e-3] * 20, 100.0, record_steps=[0, 10]
    )
    before, middle, after = objective(y), objective(recorded[10]), objective(restored)
    assert (middle < before).all() and (after < middle).all()
    assert torch.equal(recorded[0], y)
    assert recorded[0] is not y


def test_each_image_uses_its_own_tv_weight(vae):
    y, mask = images_and_masks(5, n=1, shape=(16, 20))
    weights = torch.tensor([0.0, 0.1, 0.3])
    repeated = y.expand(3, -1, -1, -1).contiguous()
    masks = mask.expand(3, -1, -1, -1)
    together, _ = map_restore(vae, repeated, masks, weights, [0.02] * 10, 100.0)
    for k, w in enumerate(weights):
        alone, _ = map_restore(vae, y, mask, w.reshape(1), [0.02] * 10, 100.0)
        torch.testing.assert_close(together[k : k + 1], alone, rtol=1e-5, atol=1e-6)
    # a larger TV weight keeps the change smoother (up to the weights where
    # the TV subgradient starts to oscillate, which You et al. avoid)
    tv = total_variation(together - repeated)
    assert tv[2] < tv[1] < tv[0]


def test_zero_tv_weight_is_plain_descent_of_the_negative_elbo(vae):
    """With lambda = 0 one step is exactly -step * clip(grad of the ELBO)."""
    y, mask = images_and_masks(6)
    x = y.clone().requires_grad_(True)
    loss = sum(vae.negative_elbo(x, mask, restoration=True).values()).sum()
    (grad,) = torch.autograd.grad(loss, x)
    restored, _ = map_restore(vae, y, mask, torch.zeros(2), [0.01], 0.5)
    torch.testing.assert_close(restored, y - 0.01 * grad.clamp(-0.5, 0.5) * mask)


# -- momentum and the fast schedule --------------------------------------------------
def test_zero_momentum_is_the_reference_update(vae):
    y, mask = images_and_masks(6)
    weights = torch.tensor([0.0, 0.5])
    plain, _ = map_restore(vae, y, mask, weights, [0.01] * 3, 0.5)
    again, _ = map_restore(vae, y, mask, weights, [0.01] * 3, 0.5, momentum=0.0)
    assert torch.equal(plain, again)


def test_momentum_update_on_a_known_loss():
    """v = beta v + (1 - beta) g, x <- x - step v, in the foreground."""
    y, mask = images_and_masks(0)
    target = torch.rand(y.shape, generator=torch.Generator().manual_seed(1))
    steps, beta = [0.1, 0.1, 0.05], 0.5
    restored, _ = map_restore(
        Quadratic(target), y, mask, torch.zeros(2), steps, 1e3, momentum=beta
    )
    x, v = y.clone(), torch.zeros_like(y)
    for s in steps:
        v = beta * v + (1 - beta) * 2 * (x - target) * mask
        x = x - s * v
    torch.testing.assert_close(restored, x)
    fg = mask.bool().expand_as(y)
    assert torch.equal(restored[~fg], y[~fg])


def _toy(seed, n=3):
    y, mask = images_and_masks(seed, n=n, shape=(16, 16))
    generator = torch.Generator().manual_seed(seed + 5)
    return y, mask, Quadratic(y + 0.3 * torch.randn(y.shape, generator=generator))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_and_paper_steps_converge_to_the_same_fixed_point(seed):
    """On the strongly convex toy loss ||X - T||^2 + lambda TV(X - Y), the
    paper's plain steps and the fast schedule's momentum steps, each run
    to convergence (long, then short steps), reach the same minimiser; the
    fast one in 300 steps against 2000."""
    y, mask, module = _toy(seed)
    weights = torch.tensor([0.0, 0.05, 0.2])
    paper, _ = map_restore(module, y, mask, weights, [5e-3] * 1000 + [1e-4] * 1000, 100.0)
    fast, _ = map_restore(
        module, y, mask, weights, [0.05] * 200 + [2e-3] * 100, 100.0, momentum=0.9
    )
    size = (paper - y).abs().mean()
    assert (fast - paper).abs().mean() < 0.02 * size
    # lambda = 0: the minimiser is the target itself, in the foreground
    fg = mask[0].bool().expand_as(y[0])
    torch.testing.assert_close(fast[0][fg], module.target[0][fg], atol=1e-4, rtol=0)

    def objective(x):
        terms = module.negative_elbo(x, mask, restoration=True)
        return terms["reconstruction"] + weights * total_variation(x - y)

    torch.testing.assert_close(objective(fast), objective(paper), rtol=1e-3, atol=1e-4)


def test_momentum_goes_further_per_step_than_plain_descent():
    """Why the fast schedule uses momentum: on a badly conditioned toy loss
    (a TV weight that makes plain steps chatter), 30 momentum steps of the
    same total length end closer to the minimiser than 30 plain ones."""
    y, mask, module = _toy(4, n=2)
    weights = torch.tensor([0.5, 1.0])
    exact, _ = map_restore(module, y, mask, weights, [5e-3] * 2000 + [1e-4] * 1000, 100.0)
    plain, _ = map_restore(module, y, mask, weights, [0.1] * 30, 100.0)
    heavy, _ = map_restore(module, y, mask, weights, [0.1] * 30, 100.0, momentum=0.9)
    assert (heavy - exact).abs().mean() < 0.5 * (plain - exact).abs().mean()


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
def test_momentum_out_of_range(vae, momentum):
    y, mask = images_and_masks(0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        map_restore(vae, y, mask, torch.zeros(2), [0.1], 1.0, momentum=momentum)


@pytest.mark.parametrize("n", range(1, 26))
def test_golden_section_finds_the_argmin_of_unimodal_curves(n):
    bound = golden_section_evaluations(n)
    for minimum in range(n):
        for shape in (lambda d: d * d, lambda d: abs(d) ** 0.5, lambda d: 3 * d if d > 0 else -d):
            calls = []

            def f(j, minimum=minimum, shape=shape, calls=calls):
                calls.append(j)
                return shape(j - minimum)

            assert golden_section_argmin(f, n) == minimum
            assert len(set(calls)) <= bound
    assert golden_section_evaluations(20) == 8


def test_golden_section_ties_and_monotone_curves():
    assert golden_section_argmin(lambda j: 0.0, 7) == 0
    assert golden_section_argmin(lambda j: -j, 20) == 19
    assert golden_section_argmin(lambda j: j, 20) == 0
    with pytest.raises(ValueError, match="n must be >= 1"):
        golden_section_argmin(lambda j: j, 0)
