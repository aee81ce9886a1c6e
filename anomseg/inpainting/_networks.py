"""The networks of the inpainting localisers: the generator that fills a
masked window, its discriminator, and the small CNN that predicts the
generator's window loss (Nguyen et al. 2020; Mavropoulos 2021).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["InpaintingGenerator", "LossPredictorNet", "WindowDiscriminator"]

#: Slope of the leaky ReLUs of the discriminator and the predictor.
LEAKY_SLOPE = 0.2


def _block(in_channels, out_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InpaintingGenerator(nn.Module):
    """A U-Net that fills the masked window of an image patch.

    Parameters
    ----------
    in_channels : int
        Channels of the image.
    width : int
        Channels of the first block, doubling at each of the ``depth``
        poolings.
    depth : int
        Poolings of the encoder; inputs are zero-padded to a multiple of
        ``2**depth`` and cropped back.

    Notes
    -----
    ``forward(x, mask)`` takes patches ``x`` (n, C, S, S) and the window
    ``mask`` (n or 1, 1, S, S), 1 inside the window. The network sees the
    patch with the window zeroed plus the mask as an extra channel, and
    returns its guess of the whole patch (n, C, S, S), unbounded; only the
    window part of it is used.
    """

    def __init__(self, in_channels=1, width=16, depth=3):
        super().__init__()
        self.depth = depth
        channels = [width * 2**k for k in range(depth + 1)]
        self.down = nn.ModuleList(
            _block(c_in, c_out)
            for c_in, c_out in zip([in_channels + 1, *channels[:-2]], channels[:-1])
        )
        self.bottleneck = _block(channels[-2], channels[-1])
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in reversed(channels[1:])
        )
        self.decode = nn.ModuleList(_block(c, c // 2) for c in reversed(channels[1:]))
        self.head = nn.Conv2d(width, in_channels, 1)

    def forward(self, x, mask):
        h, w = x.shape[-2:]
        step = 2**self.depth
        pad = (0, -w % step, 0, -h % step)
        mask = mask.expand(x.shape[0], 1, h, w)
        y = F.pad(torch.cat([x * (1 - mask), mask], dim=1), pad)
        skips = []
        for block in self.down:
            y = block(y)
            skips.append(y)
            y = F.max_pool2d(y, 2)
        y = self.bottleneck(y)
        for up, block, skip in zip(self.up, self.decode, reversed(skips)):
            y = block(torch.cat([up(y), skip], dim=1))
        return self.head(y)[..., :h, :w]


class WindowDiscriminator(nn.Module):
    """A convolutional discriminator of inpainted patches: three strided
    4x4 convolutions with leaky ReLUs, global average pooling and a linear
    layer to one logit (higher: more likely a real patch). Any patch size
    of at least 8 pixels works.

    Parameters
    ----------
    in_channels : int
    width : int
        Channels of the first convolution, doubling at each.
    """

    def __init__(self, in_channels=1, width=16):
        super().__init__()
        layers, c_in = [], in_channels
        for k in range(3):
            layers += [
                nn.Conv2d(c_in, width * 2**k, 4, stride=2, padding=1),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            ]
            c_in = width * 2**k
        self.features = nn.Sequential(*layers)
        self.dense = nn.Linear(c_in, 1)

    def forward(self, x):
        return self.dense(self.features(x).mean(dim=(2, 3))).squeeze(1)


class LossPredictorNet(nn.Module):
    """The reconstruction-loss predictor: a small CNN from an image patch to
    one sigmoid output (Mavropoulos 2021).

    ``n_blocks`` blocks of an unpadded 3x3 convolution, a leaky ReLU and 2x2
    max-pooling, then an unpadded ``final_kernel`` convolution to one
    channel and a sigmoid. A patch of exactly ``receptive_field`` pixels
    gives one output.

    Parameters
    ----------
    in_channels : int
    width : int
        Channels of the first convolution, doubling at each block.
    n_blocks : int
    final_kernel : int

    Notes
    -----
    Because no layer pads, :meth:`dense` can evaluate the network on every
    patch of a whole image in one pass (pooling at stride 1, later layers
    dilated): ``dense(x)[..., i, j]`` equals ``forward`` of the patch whose
    top-left corner is ``(i, j)``, with no patch ever cut out. This is what
    makes the predicted heatmap fast.
    """

    def __init__(self, in_channels=1, width=8, n_blocks=3, final_kernel=2):
        super().__init__()
        layers, c_in = [], in_channels
        for k in range(n_blocks):
            layers += [
                nn.Conv2d(c_in, width * 2**k, 3),
                nn.LeakyReLU(LEAKY_SLOPE),
                nn.MaxPool2d(2),
            ]
            c_in = width * 2**k
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, 1, final_kernel)
        size = final_kernel
        for _ in range(n_blocks):
            size = 2 * size + 2
        self.receptive_field = size

    def forward(self, x):
        """Predictions (n,) for patches ``x`` (n, C, R, R), R the receptive
        field."""
        return torch.sigmoid(self.head(self.features(x))).flatten(1).mean(1)

    def dense(self, x):
        """Predictions (n, H - R + 1, W - R + 1) for every R x R patch of
        images ``x`` (n, C, H, W), indexed by the patch's top-left corner."""
        dilation = 1
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                x = F.conv2d(x, layer.weight, layer.bias, dilation=dilation)
            elif isinstance(layer, nn.MaxPool2d):
                d = dilation
                x = torch.maximum(
                    torch.maximum(x[..., :-d, :-d], x[..., d:, :-d]),
                    torch.maximum(x[..., :-d, d:], x[..., d:, d:]),
                )
                dilation *= 2
            else:
                x = layer(x)
        x = F.conv2d(x, self.head.weight, self.head.bias, dilation=dilation)
        return torch.sigmoid(x[:, 0])

    @staticmethod
    def kernel_for(context_size, n_blocks=3):
        """The ``final_kernel`` whose receptive field is closest to
        ``context_size`` (at least 1)."""
        fixed = 2 ** (n_blocks + 1) - 2  # receptive field minus 2**n * kernel
        return max(1, round((context_size - fixed) / 2**n_blocks))
