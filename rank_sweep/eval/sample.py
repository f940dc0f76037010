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


@torch.no_grad()
def encode_conditioning(
    spec,
    first_frames: torch.Tensor,
    captions: list[str],
    *,
    num_frames: int,
    guidance_scale: float,
    negative_prompt: str = "",
) -> dict[str, torch.Tensor]:
    """Everything the denoiser needs from the encoders, computed once per eval clip so that
    training and evaluation run with the text and image encoders freed."""
    if first_frames.dtype != torch.uint8 or first_frames.ndim != 4 or first_frames.shape[-1] != 3:
        raise ValueError(
            f"first_frames must be uint8 [B,H,W,3], got {first_frames.dtype} {tuple(first_frames.shape)}"
        )
    b, h, w, _ = first_frames.shape
    if len(captions) != b:
        raise ValueError(f"{len(captions)} captions for {b} first frames")
    if h % 16 or w % 16:
        raise ValueError(f"height and width must be multiples of 16, got {h}x{w}")
    ff = first_frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # uint8 -> [-1, 1]
    out = {
        "text": spec.encode_prompts(list(captions)),
        "image": spec.encode_images(first_frames),
        "cond": spec.i2v_condition(ff, num_frames),
    }
    if guidance_scale > 1:
        out["neg"] = spec.encode_prompts([negative_prompt] * b)
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
            pred = spec.predict(transformer, latents, ts, cond, text, image).float()
            if neg is not None:
                uncond = spec.predict(
                    transformer, latents, ts, cond, neg.to(spec.device), image
                ).float()
                pred = uncond + guidance_scale * (pred - uncond)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        latents = spec.finalize_latents(latents, cond)
        return to_uint8_video(spec.decode_latents(latents)).cpu()
    finally:
        transformer.train(was_training)


def sample_i2v(
    spec,
    transformer: torch.nn.Module,
    first_frames: torch.Tensor,
    captions: list[str],
    *,
    num_frames: int,
    steps: int,
    guidance_scale: float,
    seed: int,
    negative_prompt: str = "",
) -> torch.Tensor:
    """Generate uint8 videos [B, num_frames, H, W, 3] starting from uint8 first frames [B,H,W,3]."""
    conditioning = encode_conditioning(
        spec,
        first_frames,
        captions,
        num_frames=num_frames,
        guidance_scale=guidance_scale,
        negative_prompt=negative_prompt,
    )
    return sample_from_conditioning(
        spec,
        transformer,
        conditioning,
        num_frames=num_frames,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
    )
