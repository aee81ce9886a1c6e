"""The generator, the discriminator and the loss predictor's dense pass."""

import pytest
import torch

from anomseg.inpainting import InpaintingGenerator, LossPredictorNet, WindowDiscriminator


@pytest.mark.parametrize("final_kernel", [1, 2, 3])
def test_dense_pass_equals_the_network_on_every_patch(final_kernel):
    torch.manual_seed(0)
    net = LossPredictorNet(in_channels=2, width=3, final_kernel=final_kernel).eval()
    size = net.receptive_field
    assert size == 8 * final_kernel + 14
    x = torch.randn(2, 2, size + 7, size + 5)
    with torch.no_grad():
        dense = net.dense(x)
        assert dense.shape == (2, 8, 6)
        for i, j in [(0, 0), (3, 1), (7, 5), (5, 4)]:
            patch = net(x[:, :, i : i + size, j : j + size])
            torch.testing.assert_close(dense[:, i, j], patch, rtol=1e-5, atol=1e-6)
    assert ((dense > 0) & (dense < 1)).all()


@pytest.mark.parametrize("context, receptive_field", [(32, 30), (64, 62), (8, 22), (40, 38)])
def test_receptive_field_follows_the_context(context, receptive_field):
    kernel = LossPredictorNet.kernel_for(context)
    assert LossPredictorNet(final_kernel=kernel).receptive_field == receptive_field


def test_generator_ignores_the_window_content():
    torch.manual_seed(0)
    net = InpaintingGenerator(in_channels=1, width=4).eval()
    x = torch.rand(3, 1, 20, 20)  # not a multiple of 2**depth: padded inside
    mask = torch.zeros(1, 1, 20, 20)
    mask[..., 8:12, 8:12] = 1
    changed = x.clone()
    changed[..., 8:12, 8:12] = 5.0
    with torch.no_grad():
        out = net(x, mask)
        assert out.shape == x.shape
        torch.testing.assert_close(net(changed, mask), out)
        x[..., 0, 0] += 1  # the context matters
        assert not torch.equal(net(x, mask), out)


def test_discriminator_gives_one_logit_per_patch():
    net = WindowDiscriminator(in_channels=2, width=4)
    assert net(torch.rand(5, 2, 16, 16)).shape == (5,)
    assert net(torch.rand(5, 2, 32, 24)).shape == (5,)
