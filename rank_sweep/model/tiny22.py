"""Tiny presets of the Wan2.2 family, written in diffusers layout like the real checkpoints.

- `wan2.2_i2v_a14b`: `WanImageToVideoPipeline` with two experts (`transformer` for high
  noise, `transformer_2` for low noise, `boundary_ratio` 0.9 as Wan2.2 I2V-A14B ships),
  36 input channels, no CLIP image encoder (Wan2.2 sees the image only through the latent).
- `wan2.2_ti2v_5b`: one transformer with 48 in/out channels over a 48-channel residual VAE
  with spatial stride 16 (patch 2 x 8), `expand_timesteps=True` (the first latent frame is
  the clean image latent with timestep 0 per token), no image encoder.

Text encoder, tokenizer and the 16-channel VAE are the tiny Wan2.1 preset's (`tiny.py`),
so every tiny family shares one text space. Sizes keep LoRA ranks 4..64 below full size.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from rank_sweep.model.layout import missing_parts

log = logging.getLogger(__name__)

ARCHES = ("wan2.1_i2v", "wan2.2_i2v_a14b", "wan2.2_ti2v_5b")
A14B_BOUNDARY = 0.9  # Wan2.2 I2V-A14B (T2V-A14B uses 0.875)
TI2V_Z = 48


def _transformer_config(in_channels: int, out_channels: int) -> dict:
    from rank_sweep.model.tiny import TRANSFORMER_CONFIG

    cfg = dict(TRANSFORMER_CONFIG)
    cfg.update(
        in_channels=in_channels, out_channels=out_channels, image_dim=None, added_kv_proj_dim=None
    )
    return cfg


def _ti2v_vae():
    from diffusers import AutoencoderKLWan

    # Wan2.2 VAE structure at toy width: residual blocks, patchified pixels (3*2*2 = 12
    # channels), 48 latent channels, stride (4, 16, 16); latents_mean/std as identity.
    return AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=TI2V_Z,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
        latents_mean=[0.0] * TI2V_Z,
        latents_std=[1.0] * TI2V_Z,
    )


def make_tiny_arch(arch: str, out: Path, seed: int = 0) -> Path:
    """Write the tiny preset of `arch` to `out`; returns `out`."""
    from rank_sweep.model.layout import ModelError
    from rank_sweep.model.tiny import make_tiny

    if arch not in ARCHES:
        raise ModelError(f"model.arch={arch!r} is not supported; allowed: {', '.join(ARCHES)}")
    out = Path(out)
    if arch == "wan2.1_i2v":
        return make_tiny(out, seed=seed)
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import AutoTokenizer, UMT5EncoderModel

    base = Path(tempfile.mkdtemp(prefix=".tiny-base-"))
    try:
        make_tiny(base, seed=seed)
        tokenizer = AutoTokenizer.from_pretrained(base / "tokenizer")
        text_encoder = UMT5EncoderModel.from_pretrained(base / "text_encoder")
        scheduler = UniPCMultistepScheduler.from_pretrained(base / "scheduler", flow_shift=5.0)
        torch.manual_seed(seed + 1)  # the experts differ from each other and from Wan2.1's
        if arch == "wan2.2_i2v_a14b":
            vae = AutoencoderKLWan.from_pretrained(base / "vae")
            parts = dict(
                transformer=WanTransformer3DModel(**_transformer_config(36, 16)).eval(),
                transformer_2=WanTransformer3DModel(**_transformer_config(36, 16)).eval(),
                boundary_ratio=A14B_BOUNDARY,
            )
        else:
            vae = _ti2v_vae()
            parts = dict(
                transformer=WanTransformer3DModel(**_transformer_config(TI2V_Z, TI2V_Z)).eval(),
                expand_timesteps=True,
            )
        pipe = WanImageToVideoPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder.eval(),
            vae=vae.eval(),
            scheduler=scheduler,
            image_processor=None,
            image_encoder=None,
            **parts,
        )
        out.mkdir(parents=True, exist_ok=True)
        pipe.save_pretrained(out, safe_serialization=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    log.info("wrote tiny %s (seed %d) to %s", arch, seed, out)
    return out


def write_tiny_once(final: Path, seed: int, arch: str) -> Path:
    """Under torch.distributed only each node's local rank 0 writes (transformers'
    save_pretrained writes nothing on other ranks, which would leave a dir without text
    encoder weights); the others wait at a barrier and then use the finished dir."""
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
        return _write_tiny_atomically(final, seed, arch)
    writer = int(os.environ.get("LOCAL_RANK", tdist.get_rank())) == 0
    try:
        if writer:
            _write_tiny_atomically(final, seed, arch)
    finally:
        tdist.barrier()
    missing = missing_parts(final)
    if missing:
        from rank_sweep.model.layout import ModelError

        raise ModelError(f"tiny model {final} was not written completely: {', '.join(missing)}")
    return final


def _write_tiny_atomically(final: Path, seed: int, arch: str = "wan2.1_i2v") -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        make_tiny_arch(arch, tmp, seed=seed)
        if final.exists() and missing_parts(final):
            shutil.rmtree(final, ignore_errors=True)  # a half-written dir from an old crash
        try:
            os.rename(tmp, final)  # atomic; fails if another process already won the race
        except OSError:
            if missing_parts(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
