"""Flow matching as the anchor trainers (finetrainers, diffusers' Wan scripts) do it:
x_t = (1 - s) * x0 + s * noise, target noise - x0, MSE; s in (0, 1) sampled uniformly or
logit-normally, then shifted towards the noisy end like Wan's sampler (shift 3.0 at 480p).

Pure functions only: the loop and the tests call them directly.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

TIMESTEP_SCALE = 1000.0  # Wan's transformer embeds timesteps in [0, 1000]
SAMPLING_MODES = ("uniform", "logit_normal")
# Keep sigmas strictly inside (0, 1): s=0 gives a zero-noise target the sampler never asks
# for, and logit(0/1) is infinite.
_EPS = 1e-5


def sample_sigmas(
    n: int,
    mode: str,
    generator: torch.Generator | None,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> torch.Tensor:
    """n float32 sigmas in (0, 1), on the generator's device (CPU without one)."""
    device = generator.device if generator is not None else torch.device("cpu")
    if mode == "uniform":
        s = torch.rand(n, generator=generator, device=device, dtype=torch.float32)
    elif mode == "logit_normal":
        z = torch.randn(n, generator=generator, device=device, dtype=torch.float32)
        s = torch.sigmoid(logit_mean + logit_std * z)
    else:
        raise ValueError(
            f"train.timestep_sampling={mode!r} is not supported; allowed: {', '.join(SAMPLING_MODES)}"
        )
    return s.clamp(_EPS, 1.0 - _EPS)


def sigma_quantiles(
    quantiles: list[float], mode: str, logit_mean: float = 0.0, logit_std: float = 1.0
) -> torch.Tensor:
    """Inverse CDF of `sample_sigmas`' distribution at `quantiles` (unshifted), so the
    validation loss probes the same timestep distribution the training samples."""
    bad = [q for q in quantiles if not 0.0 < q < 1.0]
    if bad:
        raise ValueError(f"train.val_quantiles has values outside (0, 1): {bad}")
    if mode == "uniform":
        values = list(quantiles)
    elif mode == "logit_normal":
        nd = NormalDist()
        values = [
            1.0 / (1.0 + math.exp(-(logit_mean + logit_std * nd.inv_cdf(q)))) for q in quantiles
        ]
    else:
        raise ValueError(
            f"train.timestep_sampling={mode!r} is not supported; allowed: {', '.join(SAMPLING_MODES)}"
        )
    return torch.tensor(values, dtype=torch.float32).clamp(_EPS, 1.0 - _EPS)


def shift_sigmas(s: torch.Tensor, shift: float) -> torch.Tensor:
    """shift * s / (1 + (shift - 1) * s): identity at shift 1, more noise for shift > 1."""
    if shift <= 0:
        raise ValueError(f"timestep shift={shift} must be > 0")
    return shift * s / (1.0 + (shift - 1.0) * s)


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, device=like.device)
    if sigma.ndim == 0:
        return sigma.to(like.dtype)
    return sigma.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - s) * x0 + s * noise, with one sigma per batch item (or a scalar)."""
    s = _per_sample(sigma, x0)
    return (1.0 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Velocity d x_t / d s = noise - x0."""
    return noise - x0


def flow_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE in float32 (a bf16 reduction over ~2M latent elements loses digits)."""
    return torch.nn.functional.mse_loss(pred.float(), target.float())


def sigmas_to_timesteps(s: torch.Tensor) -> torch.Tensor:
    return s * TIMESTEP_SCALE
