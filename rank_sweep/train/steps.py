"""The pieces of one training step as small functions: data order, per-sample noise,
the flow-matching micro-batch loss, the lr schedule and the validation loss."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from rank_sweep.model.experts import restrict_sigmas, sigma_range_of
from rank_sweep.train.flow import (
    add_noise,
    flow_loss,
    flow_target,
    sample_sigmas,
    shift_sigmas,
    sigma_quantiles,
    sigmas_to_timesteps,
)

# forward_fn(model, batch, noisy, timestep) -> flow prediction shaped like batch["latents"]
ForwardFn = Callable[[torch.nn.Module, dict, torch.Tensor, torch.Tensor], torch.Tensor]

_VAL_SEED = 0x5EED  # validation noise never shares a stream with training noise
_MASK63 = (1 << 63) - 1


@dataclass
class DataPos:
    """Where the data stream stands: `offset` samples of epoch `epoch`'s permutation are used."""

    epoch: int = 0
    offset: int = 0


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x0DA7A))
    return torch.randperm(n, generator=g)


def next_indices(pos: DataPos, n: int, take: int, seed: int) -> tuple[list[int], DataPos]:
    """The next `take` dataset indices of the seeded per-epoch order (an epoch's tail that
    is too short is dropped, so every micro-batch is full and ranks stay in step)."""
    if take > n:
        raise ValueError(
            f"train set has {n} clips, fewer than one micro-batch across ranks ({take}); "
            "lower train.micro_batch or dist.nproc_per_node, or add data"
        )
    if pos.offset + take > n:
        pos = DataPos(pos.epoch + 1, 0)
    perm = epoch_permutation(n, seed, pos.epoch)
    idx = perm[pos.offset : pos.offset + take].tolist()
    return idx, DataPos(pos.epoch, pos.offset + take)


def mix_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (a splitmix-style fold, no Python hash())."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK63)) * 0xBF58476D1CE4E5B9 & ((1 << 64) - 1)
        h ^= h >> 31
    return h & _MASK63


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def sample_noise_and_sigma(
    x0: torch.Tensor, cfg: Any, shift: float, seeds: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and shifted sigma per sample, each from its own seed: the draws of sample k of
    step s do not depend on how samples are split into micro-batches or ranks."""
    noises, sigmas = [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        sigmas.append(
            sample_sigmas(
                1, str(cfg.timestep_sampling), g, float(cfg.logit_mean), float(cfg.logit_std)
            )
        )
        noises.append(torch.randn(x0.shape[1:], generator=g, dtype=torch.float32))
    noise = torch.stack(noises).to(x0.device, x0.dtype)
    sigma = shift_sigmas(torch.cat(sigmas), shift).to(x0.device)
    return noise, sigma


def micro_batch_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    forward_fn: ForwardFn,
    cfg: Any,
    shift: float,
    seeds: list[int],
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    x0 = batch["latents"].float()
    noise, sigma = sample_noise_and_sigma(x0, cfg, shift, seeds)
    sigma = restrict_sigmas(sigma, *sigma_range_of(model))  # Wan2.2: the trained expert(s)
    noisy = add_noise(x0, noise, sigma)
    with torch.autocast(
        x0.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None
    ):
        pred = forward_fn(model, batch, noisy, sigmas_to_timesteps(sigma))
    return flow_loss(pred, flow_target(x0, noise))


def warmup_steps(total: int, warmup_ratio: float) -> int:
    return int(warmup_ratio * total)


def cosine_warmup_factor(step: int, total: int, warmup: int) -> float:
    """lr multiplier for scheduler step `step` (0-based): linear 0 -> 1 over `warmup` steps,
    then cosine 1 -> 0 at `total` (transformers' get_cosine_schedule_with_warmup)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def per_item_val_losses(
    model: torch.nn.Module,
    val_set: Any,
    forward_fn: ForwardFn,
    cfg: Any,
    shift: float,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    rank: int = 0,
    world: int = 1,
) -> list[float]:
    """Flow loss of every (clip, sigma quantile) item, clip-major: sigmas at
    `cfg.val_quantiles` of the training timestep distribution (inside the trained expert's
    range), noise fixed per item by `cfg.seed`, so every arm and every step sees the same
    items, noise and timesteps (the sweeper pairs arms item by item). Clips are split across
    ranks; every rank runs the same number of forwards (sharded models need all ranks)."""
    sig = shift_sigmas(
        sigma_quantiles(
            list(cfg.val_quantiles),
            str(cfg.timestep_sampling),
            float(cfg.logit_mean),
            float(cfg.logit_std),
        ),
        shift,
    )
    sig = restrict_sigmas(sig, *sigma_range_of(model)).tolist()
    n, q = len(val_set), len(sig)
    values = torch.zeros(n * q, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        for r in range(-(-n // world)):
            i = r * world + rank
            item = to_device(collate([val_set[min(i, n - 1)]]), device)
            x0 = item["latents"].float()
            for j, s in enumerate(sig):
                g = torch.Generator().manual_seed(
                    mix_seed(int(cfg.seed), _VAL_SEED, min(i, n - 1), j)
                )
                noise = torch.randn(x0.shape[1:], generator=g).unsqueeze(0).to(device)
                sigma = torch.full((1,), s, device=device)
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None
                ):
                    pred = forward_fn(
                        model, item, add_noise(x0, noise, sigma), sigmas_to_timesteps(sigma)
                    )
                if i < n:
                    values[i * q + j] = flow_loss(pred, flow_target(x0, noise)).double()
    finally:
        model.train(was_training)
    if world > 1:
        tdist.all_reduce(values)  # each item was filled by exactly one rank
    return values.cpu().tolist()


def validation_loss(
    model: torch.nn.Module,
    val_set: Any,
    forward_fn: ForwardFn,
    cfg: Any,
    shift: float,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    rank: int = 0,
    world: int = 1,
) -> float:
    """The mean of `per_item_val_losses`: the same number at the same weights, whatever
    the step."""
    items = per_item_val_losses(
        model, val_set, forward_fn, cfg, shift, device, amp_dtype, rank, world
    )
    return math.fsum(items) / len(items)
