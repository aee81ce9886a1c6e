"""MAP restoration towards a normative prior, for any differentiable ELBO.

Starting at X_0 = Y, gradient ascent on ELBO(X) - lambda * TV(X - Y) with
respect to X moves the image towards what the prior considers healthy while
the total-variation term keeps the change piecewise smooth (You et al.
2019). Gradients are clipped elementwise and applied in the foreground only.
The loop runs on whole batches on the model's device; nothing is copied to
the host until it ends.
"""

from __future__ import annotations

import torch

from ._networks import total_variation

__all__ = ["map_restore", "step_size_schedule"]


def step_size_schedule(n_steps, step_sizes, step_size_switch):
    """Step size of every step: ``step_sizes[0]`` for the first
    ``step_size_switch`` steps, then ``step_sizes[1]``."""
    first, then = step_sizes
    return [first if t < step_size_switch else then for t in range(n_steps)]


def map_restore(
    module,
    images,
    masks,
    tv_weights,
    step_sizes,
    gradient_clip,
    record_steps=(),
):
    """Restore a batch of images towards the prior of ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        Exposes ``negative_elbo(x, mask, restoration=True)`` returning a dict
        of per-sample terms.
    images : torch.Tensor of shape (n, C, H, W)
        The observed images Y, on the module's device.
    masks : torch.Tensor of shape (n, 1, H, W), float
        1 in the foreground, where X may change; 0 elsewhere.
    tv_weights : torch.Tensor of shape (n,)
        The TV weight lambda of each image, so one batch can restore the same
        image at several weights.
    step_sizes : list of float
        The step size of each step; its length is the number of steps.
    gradient_clip : float
        Elementwise bound on the gradient.
    record_steps : iterable of int
        Also return the restored images after these numbers of steps.

    Returns
    -------
    restored : torch.Tensor
        X after all steps, detached.
    recorded : dict of int to torch.Tensor
        X after each step count in ``record_steps``.
    """
    record_steps = set(record_steps)
    recorded = {0: images.clone()} if 0 in record_steps else {}
    x = images.clone()
    lam = tv_weights.reshape(-1)
    for step, step_size in enumerate(step_sizes, start=1):
        x.requires_grad_(True)
        terms = module.negative_elbo(x, masks, restoration=True)
        loss = sum(terms.values()) + lam * total_variation(x - images)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        with torch.no_grad():
            # Descend the loss = ascend ELBO - lambda TV; samples are
            # independent (no batch norm), so summing their losses is exact.
            x = x.detach() - step_size * grad.clamp_(-gradient_clip, gradient_clip) * masks
        if step in record_steps:
            recorded[step] = x.clone()
    return x.detach(), recorded
