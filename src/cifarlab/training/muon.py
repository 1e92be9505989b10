"""Muon for convolution filters, SGD with Nesterov momentum for everything else, in one optimizer.

Muon (Jordan et al. 2024, "MomentUm Orthogonalized by Newton-Schulz") replaces a filter's
momentum-SGD update by the nearest semi-orthogonal matrix: the update, flattened to
``out x (in*kh*kw)``, goes through five Newton-Schulz iterations that push all its singular
values towards 1. Every direction of the filter then moves by about the same amount per
step, which lets the short CIFAR-10 record runs (airbench94 with Muon) reach the same
accuracy in fewer epochs than SGD.

With ``normalize`` each filter tensor is rescaled to norm sqrt(out_channels) before its
step, as airbench does: a convolution followed by BatchNorm computes the same function at
any scale, so fixing the scale fixes the effective step size and weight decay is not
needed. That is only right for convs followed by BatchNorm; without ``normalize`` the
filters get decoupled weight decay instead.

One optimizer, not two, so that the training loop, checkpoints and resume see a single
``state_dict`` and the schedule sets every group's lr as ``lr_at(step) * lr_scale``. A group
with ``orthogonalize=True`` takes Muon steps; every other group takes exactly the steps of
``torch.optim.SGD`` (coupled weight decay, momentum buffer starting at the first gradient).
"""

from __future__ import annotations

import torch

# the quintic iteration's coefficients (Jordan 2024): maximal slope at zero, so five steps
# bring every singular value into roughly [0.7, 1.2], which is all an update needs
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(update: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``update`` (any shape; flattened to rows = first dim) with its singular values near 1.

    The iterations run in ``dtype``: bfloat16 where matmuls in it are native (4x float32's
    rate on an AVX512-BF16 CPU); the iteration only needs singular values near 1, not exact.
    """
    a, b, c = NS_COEFFICIENTS
    x = update.reshape(len(update), -1).to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1: inside the basin
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.T
    return x.reshape(update.shape).to(update.dtype)


class Muon(torch.optim.Optimizer):
    """Muon on the groups marked ``orthogonalize``, SGD (as ``torch.optim.SGD``) on the others.

    Group keys: ``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``orthogonalize``,
    ``normalize`` (Muon groups: rescale each tensor to norm sqrt(rows) first) and
    ``ns_steps``. Defaults apply to groups that omit a key. ``ns_dtype`` is the number format
    of the Newton-Schulz iterations (a property of the machine, so not saved with the state).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 0.0, orthogonalize: bool = False, normalize: bool = False,
                 ns_steps: int = 5, ns_dtype: torch.dtype = torch.float32):
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(f"invalid Muon settings: lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}, ns_steps={ns_steps}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay, orthogonalize=orthogonalize,
                                      normalize=normalize, ns_steps=ns_steps))
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon if group["orthogonalize"] else self._sgd)(group, params)
        return loss

    def _momentum(self, p: torch.Tensor, grad: torch.Tensor, group: dict) -> torch.Tensor:
        """The (Nesterov) momentum update from ``grad``, as torch.optim.SGD forms it: the buffer
        starts as the first gradient, then buf = momentum * buf + grad."""
        mom = group["momentum"]
        if not mom:
            return grad
        buf = self.state[p].get("momentum_buffer")
        if buf is None:
            buf = self.state[p]["momentum_buffer"] = grad.detach().clone()
        else:
            buf.mul_(mom).add_(grad)
        return grad.add(buf, alpha=mom) if group["nesterov"] else buf

    def _sgd(self, group: dict, params: list[torch.Tensor]) -> None:
        wd = group["weight_decay"]
        for p in params:
            grad = p.grad if wd == 0 else p.grad.add(p, alpha=wd)  # coupled decay, as SGD
            p.add_(self._momentum(p, grad, group), alpha=-group["lr"])

    def _muon(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        for p in params:
            update = self._momentum(p, p.grad, group)
            if group["normalize"]:
                p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
            elif wd:
                p.mul_(1 - lr * wd)  # decoupled: orthogonalizing would undo coupled decay
            p.add_(orthogonalize(update, group["ns_steps"], dtype=self.ns_dtype), alpha=-lr)
