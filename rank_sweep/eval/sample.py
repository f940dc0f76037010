"""I2V sampling for evaluation with the job's current (possibly in-training) transformer.

A small explicit loop equivalent to `WanImageToVideoPipeline.__call__`: same conditioning,
same scheduler, same CFG, same latent normalization (Wan2.2 A14B switches experts at the
boundary inside `WanExperts`; TI2V-5B's first-frame rule lives in `spec.predict`).
Noise for clip i comes from a CPU generator seeded `seed + i`, so every rank and every
device sees the same starting noise for the same clip. Callers that split a set into chunks pass
`seed = base_seed + chunk_start` to keep that property.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def initial_noise(shape: tuple[int, ...], seed: int, count: int) -> torch.Tensor:
    """[count, *shape] standard normal, clip i drawn from its own CPU generator seed+i."""
    return torch.cat(
        [
            torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(seed + i))
            for i in range(count)
        ]
    )


def to_uint8_video(pixels: torch.Tensor) -> torch.Tensor:
    """[B,3,T,H,W] in [-1,1] -> uint8 [B,T,H,W,3] (the pipeline's x/2+0.5, then x255)."""
    x = (pixels.float() / 2 + 0.5).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()


def conditioning_from_entry(
    entry: dict[str, torch.Tensor], neg: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """What `sample_from_conditioning` needs for one clip, from its precompute entry (the
    same cached encodings training reads, so eval runs with the encoders freed); `neg`
    is the encoded negative prompt when guidance is on."""
    out = {
        k: entry[src][None]
        for k, src in (("cond", "cond"), ("text", "text_emb"), ("image", "image_emb"))
    }
    if neg is not None:
        out["neg"] = neg
    return out


@torch.no_grad()
def sample_from_conditioning(
    spec,
    transformer: torch.nn.Module,
    conditioning: dict[str, torch.Tensor],
    *,
    num_frames: int,
    steps: int,
    guidance_scale: float,
    seed: int,
) -> torch.Tensor:
    """Denoise from fixed noise with the given transformer; uint8 [B, T, H, W, 3]."""
    from rank_sweep.train.precision import sampling_autocast

    cond, text, image = (conditioning[k].to(spec.device) for k in ("cond", "text", "image"))
    neg = conditioning.get("neg") if guidance_scale > 1 else None
    if guidance_scale > 1 and neg is None:
        raise ValueError("guidance_scale > 1 needs conditioning encoded with the same guidance")
    b = cond.shape[0]
    t_stride, _ = spec.vae_scale
    lat_shape = (spec.latent_channels, (num_frames - 1) // t_stride + 1, *cond.shape[-2:])
    was_training = transformer.training
    transformer.eval()
    try:
        latents = initial_noise(lat_shape, seed, b).to(spec.device)
        scheduler = spec.load_scheduler()
        scheduler.set_timesteps(steps, device=spec.device)
        for t in scheduler.timesteps:
            ts = t.expand(b)
            with sampling_autocast(spec.device):  # bf16 compute on GPU, like the pipeline
                pred = spec.predict(transformer, latents, ts, cond, text, image).float()
                if neg is not None:
                    uncond = spec.predict(
                        transformer, latents, ts, cond, neg.to(spec.device), image
                    ).float()
            if neg is not None:
                pred = uncond + guidance_scale * (pred - uncond)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        latents = spec.finalize_latents(latents, cond)
        return to_uint8_video(spec.decode_latents(latents)).cpu()
    finally:
        transformer.train(was_training)
