"""The networks of ASC-Net (Dey and Hong, 2021): a U-Net with one encoder,
two decoders and a 1x1 reconstructor, and the discriminator that judges its
fence cut.

Layout of the reference Keras code (``raun1/ASC-NET``,
``create_networks.py``) at any base width: each block is two 3x3
convolutions, each followed by ReLU then batch norm; the encoder has four
blocks of ``width * (1, 2, 4, 8)`` channels, each followed by 2x2
max-pooling and dropout, then a transition block of ``16 * width``. A
decoder level is a 2x2 transposed convolution, concatenation with the skip
connection, dropout and a block. Deliberate differences, for a
library: inputs of any size are zero-padded to a multiple of 16 and cropped
back (the reference fixes 240 x 240 or 160 x 160); the reference's L2 weight
penalty of 2e-4 is left out; PyTorch's default initialisation, except for
the reconstructor (see :class:`ASCNetModule`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ASCNetModule", "CutDiscriminator", "soft_dice"]

#: Poolings of the encoder: inputs are padded to a multiple of 2**DEPTH.
DEPTH = 4
#: Initial weight of the reconstructor on each cut (see ASCNetModule).
RECONSTRUCTOR_GAIN = 6.0
#: Dropout rate after each pooling and skip concatenation (the reference's).
DROPOUT = 0.3


def _block(in_channels, out_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_channels),
    )


def padded_shape(shape):
    """``shape`` (H, W) rounded up to a multiple of ``2**DEPTH``."""
    step = 2**DEPTH
    return tuple(-(-s // step) * step for s in shape)


def _pad(x):
    h, w = x.shape[-2:]
    ph, pw = padded_shape((h, w))
    return F.pad(x, (0, pw - w, 0, ph - h))


class _Encoder(nn.Module):
    def __init__(self, in_channels, width):
        super().__init__()
        channels = [width * 2**k for k in range(DEPTH)]
        self.blocks = nn.ModuleList(
            _block(c_in, c_out) for c_in, c_out in zip([in_channels, *channels], channels)
        )
        self.dropout = nn.Dropout(DROPOUT)
        self.transition = _block(channels[-1], 2 * channels[-1])

    def forward(self, x):
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = self.dropout(F.max_pool2d(x, 2))
        return self.transition(x), skips


class _Decoder(nn.Module):
    """A U-Net decoder ending in a sigmoid image of ``out_channels``."""

    def __init__(self, width, out_channels):
        super().__init__()
        channels = [width * 2**k for k in reversed(range(DEPTH))]
        inputs = [2 * channels[0], *channels[:-1]]
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, 2, stride=2) for c_in, c_out in zip(inputs, channels)
        )
        self.blocks = nn.ModuleList(_block(2 * c, c) for c in channels)
        self.dropout = nn.Dropout(DROPOUT)
        self.head = nn.Conv2d(channels[-1], out_channels, 1)

    def forward(self, x, skips):
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips)):
            x = block(self.dropout(torch.cat([up(x), skip], dim=1)))
        return torch.sigmoid(self.head(x))


class ASCNetModule(nn.Module):
    """The main module M of ASC-Net.

    Parameters
    ----------
    in_channels : int
        Channels of the input image.
    width : int
        Channels of the first encoder block; the reference uses 32.

    Notes
    -----
    ``forward(x)`` returns the fence cut ``I_fc``, the wild cut ``I_wc`` and
    the reconstruction ``I_ro = sigmoid(conv1x1([I_fc, I_wc]))``, each with
    the shape of ``x``, (n, C, H, W), and values in (0, 1). The cuts have
    the input's channels so that the discriminator can compare the fence cut
    with reference images.
    """

    def __init__(self, in_channels=1, width=32):
        super().__init__()
        self.encoder = _Encoder(in_channels, width)
        self.fence_decoder = _Decoder(width, in_channels)
        self.wild_decoder = _Decoder(width, in_channels)
        self.reconstructor = nn.Conv2d(2 * in_channels, in_channels, 1)
        # sigmoid(w * (I_fc + I_wc) + b) spans (0.05, 0.95) over [0, 1] from
        # the start. With the default initialisation (|w| < 1) the
        # reconstruction can only reach a narrow band around 0.5, and Adam
        # needs thousands of steps to grow w: the reference code trained
        # that long, a CPU budget does not.
        nn.init.constant_(self.reconstructor.weight, RECONSTRUCTOR_GAIN / in_channels)
        nn.init.constant_(self.reconstructor.bias, -RECONSTRUCTOR_GAIN / 2)

    def forward(self, x):
        h, w = x.shape[-2:]
        code, skips = self.encoder(_pad(x))
        fence = self.fence_decoder(code, skips)
        wild = self.wild_decoder(code, skips)
        reconstruction = torch.sigmoid(self.reconstructor(torch.cat([fence, wild], dim=1)))
        return tuple(t[..., :h, :w] for t in (fence, wild, reconstruction))


class CutDiscriminator(nn.Module):
    """The discriminator D: the encoder of :class:`ASCNetModule` (without
    skips), then a dense layer with a tanh output in (-1, 1).

    Its dense layer sees the flattened last feature map, so D only accepts
    inputs of ``input_shape`` padded to a multiple of 16, as in the
    reference code; it is used in training only.

    Parameters
    ----------
    in_channels : int
    width : int
    input_shape : tuple of int (H, W)
        Spatial shape of the training images.
    """

    def __init__(self, in_channels=1, width=32, input_shape=(128, 128)):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.encoder = _Encoder(in_channels, width)
        ph, pw = padded_shape(self.input_shape)
        features = 2 * width * 2 ** (DEPTH - 1) * (ph // 2**DEPTH) * (pw // 2**DEPTH)
        self.dense = nn.Linear(features, 1)

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.input_shape:
            raise ValueError(
                f"CutDiscriminator was built for images of shape "
                f"{self.input_shape}; got {tuple(x.shape[-2:])}."
            )
        code, _ = self.encoder(_pad(x))
        return torch.tanh(self.dense(code.flatten(1))).squeeze(1)


def soft_dice(a, b, smooth=1.0):
    """Per-sample soft Dice overlap ``(2 sum(ab) + s) / (sum(a) + sum(b) + s)``
    of two batches of maps in [0, 1]: the disjointness loss of ASC-Net,
    which is small when the two cuts do not overlap."""
    a, b = a.flatten(1), b.flatten(1)
    return (2 * (a * b).sum(1) + smooth) / (a.sum(1) + b.sum(1) + smooth)
