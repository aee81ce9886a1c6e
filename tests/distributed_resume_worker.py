"""A worker of tests/test_callbacks.py, run by ``torchrun`` on 2 processes:
a denoising autoencoder trained data-parallel, interrupted after epoch 2 of
3 and resumed from its checkpoint, against one trained uninterrupted. Each
process writes ``rank<r>.json``: whether its weights are the uninterrupted
ones, and its epochs."""

import contextlib
import json
import sys
from pathlib import Path

import torch

from anomseg.callbacks import Callback, Checkpoint
from anomseg.datasets import make_healthy_images
from anomseg.denoising import DenoisingAESegmenter
from anomseg.distributed import process_group, rank


class Interrupt(Exception):
    pass


class InterruptAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, training):
        if training.epoch == self.epoch:
            raise Interrupt


def make(**params):
    return DenoisingAESegmenter(
        width=2, depth=2, noise_resolution=4, n_epochs=3, batch_size=2, random_state=0, **params
    )


def main(folder):
    torch.set_num_threads(1)
    X = make_healthy_images(n_images=16, shape=(32, 32), random_state=0)
    path = Path(folder) / "dae.ckpt"
    with process_group(device="cpu"):
        uninterrupted = make().fit(X, calibrate=False)
        with contextlib.suppress(Interrupt):
            interrupted = make(callbacks=[Checkpoint(path, resume=True), InterruptAt(2)])
            interrupted.fit(X, calibrate=False)
        resumed = make(callbacks=[Checkpoint(path, resume=True)]).fit(X, calibrate=False)
        theirs, ours = uninterrupted.module_.state_dict(), resumed.module_.state_dict()
        same = all(torch.equal(theirs[key], ours[key]) for key in theirs)
        result = {"same": same, "epochs": len(resumed.history_)}
        (Path(folder) / f"rank{rank()}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
