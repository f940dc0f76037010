"""Train the tiny Wan VAE (AutoencoderKLWan, the 14B's class at toy width) on the world's
clips, then set its latents_mean/latents_std to the measured per-channel statistics, as the
released Wan VAE config carries them, so the transformer sees unit-scale latents."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from rank_sweep.world.config import WorldRecipe
from rank_sweep.world.fit import fit, warmup_cosine
from rank_sweep.world.pools import to_pixels, windows

log = logging.getLogger(__name__)

KL_WEIGHT = 1e-6  # keeps the posterior bounded; reconstructions dominate


def new_vae(recipe: WorldRecipe):
    from rank_sweep.model.tiny import tiny_vae

    return tiny_vae(recipe.vae_base_dim, recipe.vae_dim_mult)


def train_vae(
    vae: torch.nn.Module,
    videos: np.ndarray,
    recipe: WorldRecipe,
    gen: np.random.Generator,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Reconstruction training (MSE + L1 on the posterior mode, tiny KL); returns losses.
    The global torch RNG is not used: batches come from `gen`, the mode is deterministic."""
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)

    def batch_loss(step: int) -> torch.Tensor:
        idx = gen.choice(len(videos), size=recipe.vae_batch, replace=False)
        x = torch.from_numpy(to_pixels(windows(videos[idx], recipe.vae_frames, gen)))
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mode()).sample
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        return (rec - x).pow(2).mean() + 0.5 * (rec - x).abs().mean() + KL_WEIGHT * kl

    losses = fit(vae, opt, recipe.vae_steps,
                 lambda step: recipe.vae_lr * warmup_cosine(step, recipe.vae_steps), batch_loss,
                 clip_norm=1.0, progress=progress)  # fmt: skip
    log.info("VAE: loss %.4f -> %.4f over %d steps", losses[0], losses[-1], len(losses))
    return losses


@torch.no_grad()
def reconstruct(vae: torch.nn.Module, clips: np.ndarray, batch: int = 8) -> np.ndarray:
    """uint8 clips through encode(mode) + decode, back to uint8 [N, T, H, W, 3]."""
    out = []
    for i in range(0, len(clips), batch):
        x = torch.from_numpy(to_pixels(clips[i : i + batch]))
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        u8 = ((rec + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        out.append(u8.permute(0, 2, 3, 4, 1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def set_latent_stats(vae: torch.nn.Module, clips: np.ndarray) -> None:
    """Per-channel mean/std of the posterior mode over `clips`, written into the config."""
    mus = []
    for i in range(0, len(clips), 8):
        x = torch.from_numpy(to_pixels(clips[i : i + 8]))
        mus.append(vae.encode(x).latent_dist.mode())
    z = torch.cat(mus).transpose(0, 1).reshape(16, -1).double()
    mean = z.mean(1)
    std = z.std(1).clamp_min(1e-3)
    vae.register_to_config(
        latents_mean=[round(float(v), 6) for v in mean],
        latents_std=[round(float(v), 6) for v in std],
    )


def psnr(real: np.ndarray, fake: np.ndarray) -> float:
    """PSNR in dB over uint8 videos (one MSE over all pixels)."""
    mse = np.mean((real.astype(np.float64) - fake.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))
