"""The U-Net of the denoising autoencoder (Kascenas et al., 2022)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DenoisingUNet", "coarse_noise"]


def _groups(channels):
    """The middle divisor of ``channels``: the group count of the reference
    code's group normalisation (4 groups of 4 for 16 channels)."""
    divisors = sorted(d for d in range(1, channels + 1) if channels % d == 0)
    return divisors[len(divisors) // 2]


class _ConvBlock(nn.Sequential):
    """Two reflection-padded 3x3 convolutions, each followed by SiLU (swish)
    and group normalisation."""

    def __init__(self, in_channels, out_channels):
        layers = []
        for c_in in (in_channels, out_channels):
            layers += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(c_in, out_channels, kernel_size=3),
                nn.SiLU(),
                nn.GroupNorm(_groups(out_channels), out_channels),
            ]
        super().__init__(*layers)


class DenoisingUNet(nn.Module):
    """A U-Net that maps a noisy image to the clean one.

    ``depth`` resolution levels with ``width * 2**level`` channels, average
    pooling down, transposed convolutions up and skip connections, as in the
    reference code (there with ``width=64``, ``depth=4``).

    Parameters
    ----------
    in_channels : int
        Image channels; the output has as many.
    width : int
        Channels at full resolution.
    depth : int
        Resolution levels; inputs must have heights and widths divisible by
        ``2**(depth - 1)``.
    """

    def __init__(self, in_channels=1, width=16, depth=4):
        super().__init__()
        self.depth = depth
        channels = [width * 2**level for level in range(depth)]
        self.down = nn.ModuleList()
        previous = in_channels
        for c in channels:
            self.down.append(_ConvBlock(previous, c))
            previous = c
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for c in reversed(channels[:-1]):
            self.up.append(nn.ConvTranspose2d(previous, c, kernel_size=2, stride=2))
            self.merge.append(_ConvBlock(2 * c, c))
            previous = c
        self.last = nn.Conv2d(previous, in_channels, kernel_size=1)

    def forward(self, x):
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < self.depth - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.last(x)


def coarse_noise(shape, resolution, std, generator):
    """Spatially correlated Gaussian noise of ``shape`` (n, C, H, W):
    white noise on a ``resolution`` x ``resolution`` grid (or ``(rows,
    cols)``), bilinearly upsampled to (H, W) and rolled by a random offset,
    as in Kascenas et al."""
    n, c, h, w = shape
    device = generator.device
    rows, cols = (resolution, resolution) if isinstance(resolution, int) else resolution
    grid = torch.randn((n, c, rows, cols), generator=generator, device=device) * std
    noise = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
    shifts = torch.randint(0, max(h, w), (2,), generator=generator, device=device)
    return torch.roll(noise, shifts=(int(shifts[0]), int(shifts[1])), dims=(-2, -1))
