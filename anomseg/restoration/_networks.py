"""Fully convolutional VAE and GMVAE priors with a differentiable ELBO.

The layout follows the reference code of You et al. (2019): a 7-layer
encoder with two stride-2 convolutions, so the latent maps have a quarter of
the input's resolution, and a mirrored 7-layer decoder with nearest-neighbour
upsampling. Two deliberate differences, so that any input size works:

* convolutions are zero-padded ("same") rather than unpadded, and inputs are
  zero-padded to a multiple of 4 and cropped back;
* PyTorch's default weight initialisation replaces the reference's
  N(0, 0.01) draws, which train much more slowly.

Every module exposes :meth:`negative_elbo`, the per-sample loss that training
minimises and restoration descends; that method is all the restorer needs.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LOSS_TERMS", "ConvGMVAE", "ConvVAE", "total_variation"]

#: Decoder standard deviation during restoration (You et al.): the learned
#: one is large exactly in lesions, which would scale their gradients down.
RESTORATION_SIGMA = 1 / math.sqrt(2)
#: Bounds of the decoder's standard deviation during training.
SIGMA_BOUNDS = (1e-3, 1.0)
#: Per-position floor of KL(q(c|z,w) || uniform) in the GMVAE, from the
#: reference code ("c_lambda"); below it the term exerts no gradient.
CLUSTER_KL_FLOOR = 0.5
#: The spatial downsampling of the encoder.
STRIDE = 4

LOSS_TERMS = {
    "ConvVAE": ("reconstruction", "kl_z"),
    "ConvGMVAE": ("reconstruction", "kl_conditional", "kl_w", "kl_clusters"),
}


def _conv(in_channels, out_channels, kernel_size=3, stride=1):
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)


class _Encoder(nn.Module):
    """Six 3x3 ReLU convolutions (stride 2 in the first and fourth), then
    1x1 heads giving the mean and log-variance of each latent map."""

    def __init__(self, in_channels, width, latent_channels):
        super().__init__()
        layers = []
        for i in range(6):
            layers += [
                _conv(in_channels if i == 0 else width, width, stride=2 if i in (0, 3) else 1),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleList(_conv(width, 2 * c, kernel_size=1) for c in latent_channels)

    def forward(self, x):
        h = self.body(x)
        return [head(h).chunk(2, dim=1) for head in self.heads]


class _Decoder(nn.Module):
    """A 1x1 and two 3x3 convolutions at the latent resolution, two
    nearest-neighbour upsamplings each followed by 3x3 convolutions, and
    3x3 heads for the mean and the clipped inverse log-variance."""

    def __init__(self, latent_channels, width, out_channels):
        super().__init__()
        relu = nn.ReLU
        self.body = nn.Sequential(
            _conv(latent_channels, width, kernel_size=1),
            relu(),
            _conv(width, width),
            relu(),
            _conv(width, width),
            relu(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(width, width),
            relu(),
            _conv(width, width),
            relu(),
            _conv(width, width),
            relu(),
            nn.Upsample(scale_factor=2, mode="nearest"),
        )
        self.mean = _conv(width, out_channels)
        self.log_precision = _conv(width, out_channels)
        # Start at sigma = exp(-1/2), inside the bounds: a clamped value has
        # no gradient, so starting outside them could never recover.
        nn.init.zeros_(self.log_precision.weight)
        nn.init.ones_(self.log_precision.bias)

    def forward(self, z):
        h = self.body(z)
        low, high = (-2 * math.log(s) for s in reversed(SIGMA_BOUNDS))
        return self.mean(h), self.log_precision(h).clamp(low, high)


def _kl_standard_normal(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, 1)) per sample, summed over the map."""
    return 0.5 * (mean.square() + logvar.exp() - logvar - 1).sum(dim=(1, 2, 3))


def _sample(mean, logvar, generator):
    if generator is None:  # restoration and plain reconstruction: the mean
        return mean
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + (0.5 * logvar).exp() * noise


def _pad_to_stride(x, mask):
    """Zero-pad height and width to multiples of STRIDE (the mask with
    False, so padding never enters a loss)."""
    pad_h = -x.shape[-2] % STRIDE
    pad_w = -x.shape[-1] % STRIDE
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h))
    return x, mask


class _Prior(nn.Module):
    """Shared pieces of the two priors: padding and the Gaussian likelihood.

    ``negative_elbo(x, mask, generator=None, restoration=False)`` returns a
    dict of per-sample loss terms (tensors of shape ``(n,)``) whose sum over
    terms is the negative ELBO. ``mask`` (float, 1 in the foreground) limits
    the reconstruction term; ``generator`` draws the latent samples of
    training, and without one the posterior means are used. With
    ``restoration=True`` the decoder's standard deviation is fixed to
    :data:`RESTORATION_SIGMA` and constants are dropped.
    """

    def __init__(self, in_channels, width):
        super().__init__()
        self.in_channels = in_channels
        self.width = width

    def _reconstruction(self, x, mask, mean, log_precision, restoration):
        h, w = x.shape[-2:]
        mean = mean[..., :h, :w]
        if restoration:  # (x - mu)^2 / (2 sigma^2) with sigma^2 = 1/2
            nll = (x - mean).square() / (2 * RESTORATION_SIGMA**2)
        else:
            log_precision = log_precision[..., :h, :w]
            nll = 0.5 * (
                (x - mean).square() * log_precision.exp() - log_precision + math.log(2 * math.pi)
            )
        return (nll * mask).sum(dim=(1, 2, 3))

    def reconstruct(self, x):
        """Decoder mean of the posterior-mean latents, cropped to ``x``."""
        padded, _ = _pad_to_stride(x, x)
        return self._decode_mean(padded)[..., : x.shape[-2], : x.shape[-1]]


class ConvVAE(_Prior):
    """Gaussian VAE with a 2D latent map z, N(0, I) prior."""

    def __init__(self, in_channels=1, width=16, latent_channels=1):
        super().__init__(in_channels, width)
        self.encoder = _Encoder(in_channels, width, [latent_channels])
        self.decoder = _Decoder(latent_channels, width, in_channels)

    def negative_elbo(self, x, mask, generator=None, restoration=False):
        padded, _ = _pad_to_stride(x, mask)
        [(z_mean, z_logvar)] = self.encoder(padded)
        z = _sample(z_mean, z_logvar, generator)
        recon = self._reconstruction(x, mask, *self.decoder(z), restoration)
        return {"reconstruction": recon, "kl_z": _kl_standard_normal(z_mean, z_logvar)}

    def _decode_mean(self, padded):
        [(z_mean, _)] = self.encoder(padded)
        return self.decoder(z_mean)[0]


class ConvGMVAE(_Prior):
    """Gaussian-mixture VAE (Dilokthanakul et al.) with 2D latent maps.

    q(z|X) and q(w|X) share the encoder. The conditional prior p(z|w, c) of
    each of ``n_clusters`` clusters is Gaussian with mean and precision from
    1x1 convolutions of w, and p(c|z, w) is their posterior responsibility.
    """

    def __init__(self, in_channels=1, width=16, latent_channels=1, n_clusters=9):
        super().__init__(in_channels, width)
        self.latent_channels = latent_channels
        self.n_clusters = n_clusters
        self.encoder = _Encoder(in_channels, width, [latent_channels] * 2)
        self.decoder = _Decoder(latent_channels, width, in_channels)
        self.conditional_prior = nn.Sequential(
            _conv(latent_channels, width, kernel_size=1),
            nn.ReLU(),
            _conv(width, 2 * latent_channels * n_clusters, kernel_size=1),
        )

    def negative_elbo(self, x, mask, generator=None, restoration=False):
        padded, _ = _pad_to_stride(x, mask)
        (z_mean, z_logvar), (w_mean, w_logvar) = self.encoder(padded)
        z = _sample(z_mean, z_logvar, generator)
        w = _sample(w_mean, w_logvar, generator)
        recon = self._reconstruction(x, mask, *self.decoder(z), restoration)

        n, c, h, wd = z_mean.shape
        prior_mean, prior_log_precision = (
            t.reshape(n, c, self.n_clusters, h, wd)
            for t in self.conditional_prior(w).chunk(2, dim=1)
        )
        # p(c | z, w): softmax over clusters of the log-likelihood of z.
        log_lik = 0.5 * (
            prior_log_precision
            - (z.unsqueeze(2) - prior_mean).square() * prior_log_precision.exp()
            - math.log(2 * math.pi)
        ).sum(dim=1)
        responsibility = log_lik.softmax(dim=1)  # (n, K, h, w)

        # E_c KL(q(z|X) || p(z|w, c)), closed form per cluster.
        kl = 0.5 * (
            (z_logvar.exp().unsqueeze(2) + (z_mean.unsqueeze(2) - prior_mean).square())
            * prior_log_precision.exp()
            - prior_log_precision
            - z_logvar.unsqueeze(2)
            - 1
        ).sum(dim=1)
        kl_conditional = (kl * responsibility).sum(dim=(1, 2, 3))

        kl_clusters = (
            (responsibility * (responsibility * self.n_clusters + 1e-8).log())
            .sum(dim=1)
            .clamp(min=CLUSTER_KL_FLOOR)
            .sum(dim=(1, 2))
        )
        return {
            "reconstruction": recon,
            "kl_conditional": kl_conditional,
            "kl_w": _kl_standard_normal(w_mean, w_logvar),
            "kl_clusters": kl_clusters,
        }

    def _decode_mean(self, padded):
        (z_mean, _), _ = self.encoder(padded)
        return self.decoder(z_mean)[0]


def total_variation(x):
    """Anisotropic total variation per sample: the sum of absolute
    differences between vertical and horizontal neighbours, as
    ``tf.image.total_variation`` computes it."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().sum(dim=(1, 2, 3))
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().sum(dim=(1, 2, 3))
    return dh + dw
