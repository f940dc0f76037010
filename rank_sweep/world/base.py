"""Pretrain the tiny Wan I2V transformer on the base domain with flow matching, through the
same conditioning (`encode_item`) and forward (`forward_batch`) that fine-tuning uses, so
the fine-tuning jobs start from a base that makes plausible base-domain videos."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rank_sweep.train.flow import (
    add_noise,
    flow_loss,
    flow_target,
    sample_sigmas,
    shift_sigmas,
    sigmas_to_timesteps,
)
from rank_sweep.world.config import WorldRecipe
from rank_sweep.world.fit import fit, warmup_cosine

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_clips(spec: Any, clips: np.ndarray, captions: list[str]) -> dict[str, torch.Tensor]:
    """Stacked latents / I2V condition / text / image embeddings of uint8 clips."""
    from rank_sweep.model.precompute import encode_item
    from rank_sweep.world.pools import to_pixels

    text_cache: dict[str, torch.Tensor] = {}
    rows = []
    for clip, cap in zip(clips, captions):
        item = {
            "pixels": torch.from_numpy(to_pixels(clip[None]))[0],
            "caption": cap,
            "first_frame": torch.from_numpy(np.ascontiguousarray(clip[0])),
        }
        rows.append(encode_item(spec, item, text_cache))
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def pretrain(
    transformer: torch.nn.Module,
    data: dict[str, torch.Tensor],
    recipe: WorldRecipe,
    *,
    shift: float,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Full-parameter flow matching (logit-normal sigmas, Wan's shift) on `data`; returns
    the per-step losses. Noise, sigmas and batches come from a local generator."""
    from rank_sweep.model.spec import forward_batch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(transformer.parameters(), lr=recipe.base_lr, weight_decay=0.01)
    n, steps = len(data["latents"]), recipe.base_steps

    def batch_loss(step: int) -> torch.Tensor:
        idx = torch.randperm(n, generator=gen)[: recipe.base_batch]
        batch = {k: v[idx] for k, v in data.items()}
        x0 = batch["latents"].float()
        sigma = shift_sigmas(sample_sigmas(len(idx), "logit_normal", gen), shift)
        noise = torch.randn(x0.shape, generator=gen)
        pred = forward_batch(
            transformer, batch, add_noise(x0, noise, sigma), sigmas_to_timesteps(sigma)
        )
        return flow_loss(pred, flow_target(x0, noise))

    losses = fit(transformer, opt, steps, lambda step: recipe.base_lr * warmup_cosine(step, steps),
                 batch_loss, clip_norm=1.0, progress=progress)  # fmt: skip
    log.info("base pretraining: loss %.4f -> %.4f over %d steps", losses[0], losses[-1], steps)
    return losses
