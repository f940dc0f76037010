"""The one small training loop of the world's parts (VAE, base transformer, detectors):
AdamW steps on a caller's batch loss, the caller's lr schedule, optional gradient clipping.
Each caller keeps its own data, loss and randomness (local generators, in its own order)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def warmup_cosine(step: int, total: int) -> float:
    """lr factor: linear warm-up over the first 5% of steps, then cosine to 0."""
    warm = max(1, total // 20)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def fit(
    module: torch.nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    lr_at: Callable[[int], float],
    batch_loss: Callable[[int], torch.Tensor],
    *,
    clip_norm: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """`steps` optimizer steps on `batch_loss(step)`; returns the per-step losses and leaves
    `module` in eval mode."""
    module.train()
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = batch_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(1)
    module.eval()
    return losses


def fit_classifier(
    net: torch.nn.Module,
    steps: int,
    lr: float,
    batch_loss: Callable[[int], torch.Tensor],
    *,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """The detectors' recipe: AdamW (weight decay 1e-4), cosine from the first step, no
    warm-up (they train from scratch on labels)."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    # np.cos, not math.cos: the built worlds' bytes were made with it (an ulp moves weights)
    schedule = lambda step: lr * 0.5 * (1 + np.cos(np.pi * step / max(1, steps)))  # noqa: E731
    return fit(net, opt, steps, schedule, batch_loss, progress=progress)
