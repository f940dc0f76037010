"""Wan2.1 I2V spec: resolve the model dir, load the pipeline parts, and build the exact
conditioning `WanImageToVideoPipeline` builds (finetrainers-style: the spec owns loading
and conditioning, the training loop only sees tensors).

Encoders are loaded lazily. `free_encoders()` drops the UMT5 text encoder and the CLIP
image encoder (the big ones: ~11 GB for umt5-xxl) once embeddings are precomputed; the
VAE stays, because evaluation needs its encoder for the first-frame condition and its
decoder for the generated videos.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rank_sweep.model.layout import ModelError, missing_parts

log = logging.getLogger(__name__)

TEXT_LEN = 512  # Wan's attention treats the LAST 512 context tokens as text


def resolve_model_path(model_cfg: Any) -> Path:
    """`model.path` validated, or (path null) the tiny model in the cache, written once."""
    from rank_sweep.paths import cache_dir

    if model_cfg.path is not None:
        path = Path(model_cfg.path).expanduser()
        missing = missing_parts(path)
        if missing:
            raise ModelError(
                f"model.path={path} is not a complete diffusers WanImageToVideoPipeline dir; "
                f"missing: {', '.join(missing)}"
            )
        return path.resolve()
    from rank_sweep.world import world_for

    world = world_for(model_cfg)  # model.world set: the trained world's pipeline
    if world is not None:
        return world.model_dir
    final = cache_dir() / "models" / f"tiny_wan-s{int(model_cfg.tiny_seed)}"
    if not missing_parts(final):
        return final
    return _write_tiny_atomically(final, int(model_cfg.tiny_seed))


def _write_tiny_atomically(final: Path, seed: int) -> Path:
    from rank_sweep.model.tiny import make_tiny

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        make_tiny(tmp, seed=seed)
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


def _dtype(name: str | torch.dtype | None) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ModelError(f"model.dtype={name!r} is not supported; allowed: {sorted(table)}")
    return table[name]


@dataclass
class WanSpec:
    path: Path
    device: torch.device
    dtype: torch.dtype  # frozen text encoder dtype; VAE and CLIP stay float32 (as Wan does)
    shift: float
    _parts: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(
        cls, model_cfg: Any, device: torch.device, dtype: torch.dtype | None = None
    ) -> WanSpec:
        return cls(
            path=resolve_model_path(model_cfg),
            device=torch.device(device),
            dtype=dtype if dtype is not None else _dtype(model_cfg.dtype),
            shift=float(model_cfg.flow_shift),
        )

    # ---- properties -------------------------------------------------------------------
    @property
    def flow_shift(self) -> float:
        return self.shift

    @property
    def vae_scale(self) -> tuple[int, int]:
        """(temporal, spatial) stride of the VAE: 4 and 8 for every Wan2.1 VAE."""
        cfg = json.loads((self.path / "vae" / "config.json").read_text())
        return int(cfg.get("scale_factor_temporal", 4)), int(cfg.get("scale_factor_spatial", 8))

    def transformer_config(self) -> dict:
        return json.loads((self.path / "transformer" / "config.json").read_text())

    # ---- loading ----------------------------------------------------------------------
    def load_transformer(self, dtype: torch.dtype = torch.float32):
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel.from_pretrained(
            self.path, subfolder="transformer", torch_dtype=dtype
        )
        return model.to(self.device)

    def load_scheduler(self):
        """The model dir's scheduler with this spec's flow shift (3.0 at 480p, 5.0 at 720p)."""
        import diffusers

        cfg = json.loads((self.path / "scheduler" / "scheduler_config.json").read_text())
        cls = getattr(diffusers, cfg["_class_name"])
        key = "flow_shift" if "flow_shift" in cfg else "shift"
        return cls.from_config(cfg, **{key: self.shift})

    def load_encoders(self) -> None:
        for name in ("vae", "text_encoder", "tokenizer", "image_encoder", "image_processor"):
            self._part(name)

    def free_encoders(self) -> None:
        """Drop text and image encoders (and their pre-processors); keep the VAE for eval."""
        for name in ("text_encoder", "tokenizer", "image_encoder", "image_processor"):
            self._parts.pop(name, None)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _part(self, name: str):
        if name in self._parts:
            return self._parts[name]
        sub = str(self.path / name)
        if name == "vae":
            from diffusers import AutoencoderKLWan

            obj = AutoencoderKLWan.from_pretrained(sub, torch_dtype=torch.float32)
        elif name == "text_encoder":
            from transformers import UMT5EncoderModel

            obj = UMT5EncoderModel.from_pretrained(sub, dtype=self.dtype)
        elif name == "image_encoder":
            from transformers import CLIPVisionModel

            # CLIPVisionModel reads the hidden states of a ...WithProjection checkpoint too.
            obj = CLIPVisionModel.from_pretrained(sub, dtype=torch.float32)
        elif name == "tokenizer":
            from transformers import AutoTokenizer

            obj = AutoTokenizer.from_pretrained(sub)
        elif name == "image_processor":
            from transformers import AutoImageProcessor

            obj = AutoImageProcessor.from_pretrained(sub)
        else:
            raise ModelError(f"unknown model part {name!r}")
        if isinstance(obj, torch.nn.Module):
            obj = obj.to(self.device).eval().requires_grad_(False)
        self._parts[name] = obj
        return obj

    # ---- conditioning (mirrors WanImageToVideoPipeline) --------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """UMT5 states [B, 512, D]; tokens past each prompt's length are exact zeros."""
        from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean

        tok, enc = self._part("tokenizer"), self._part("text_encoder")
        batch = tok(
            [prompt_clean(p) for p in prompts],
            padding="max_length",
            max_length=TEXT_LEN,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        states = enc(ids, mask).last_hidden_state
        keep = mask.gt(0).unsqueeze(-1).to(states.dtype)  # same as the pipeline's trim + zero-pad
        return states * keep

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP penultimate hidden states [B, N, Dclip] of uint8 [B, H, W, 3] frames."""
        from PIL import Image

        proc, enc = self._part("image_processor"), self._part("image_encoder")
        pil = [Image.fromarray(im.cpu().numpy()) for im in images]  # the pipeline feeds PIL
        pixel_values = proc(images=pil, return_tensors="pt").pixel_values.to(self.device)
        out = enc(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[-2]

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self._part("vae").config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1)
        return mean.to(like.device, like.dtype), inv_std.to(like.device, like.dtype)

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalized latents [B,16,T',H',W'] of pixels [B,3,T,H,W] in [-1, 1].

        Uses the posterior mode (as the pipeline does for its condition): deterministic, so a
        cached latent is the same latent every time it is reused.
        """
        vae = self._part("vae")
        lat = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist.mode().float()
        mean, inv_std = self._latent_stats(lat)
        return (lat - mean) * inv_std

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels [B,3,T,H,W] in [-1, 1] from normalized latents."""
        vae = self._part("vae")
        lat = latents.to(self.device, vae.dtype)
        mean, inv_std = self._latent_stats(lat)
        video = vae.decode(lat / inv_std + mean, return_dict=False)[0]
        return video.float().clamp(-1.0, 1.0)

    @torch.no_grad()
    def i2v_condition(self, first_frame: torch.Tensor, num_frames: int) -> torch.Tensor:
        """[B, 4+16, T', H', W']: frame mask folded by the temporal stride + latent of the
        first frame followed by black frames, as WanImageToVideoPipeline.prepare_latents."""
        t_stride, _ = self.vae_scale
        if (num_frames - 1) % t_stride:
            raise ModelError(f"num_frames={num_frames} must be {t_stride}k+1 (VAE stride)")
        b, _, h, w = first_frame.shape
        ff = first_frame.to(self.device, torch.float32).unsqueeze(2)
        video = torch.cat([ff, ff.new_zeros(b, 3, num_frames - 1, h, w)], dim=2)
        lat = self.encode_video(video)
        return torch.cat([frame_mask(b, num_frames, lat.shape[-2:], t_stride, lat), lat], dim=1)

    def predict(
        self,
        transformer: torch.nn.Module,
        noisy: torch.Tensor,
        timestep: torch.Tensor,
        cond: torch.Tensor,
        text_emb: torch.Tensor,
        image_emb: torch.Tensor,
    ) -> torch.Tensor:
        """Flow prediction (noise - x0) of the transformer for 36-channel I2V input."""
        return predict_flow(transformer, noisy, timestep, cond, text_emb, image_emb)


def predict_flow(
    transformer: torch.nn.Module,
    noisy: torch.Tensor,
    timestep: torch.Tensor,
    cond: torch.Tensor,
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
) -> torch.Tensor:
    """Flow prediction (noise - x0): noisy latent (16) + I2V condition (20) = 36 channels."""
    dtype = next(transformer.parameters()).dtype
    hidden = torch.cat([noisy, cond.to(noisy.dtype)], dim=1).to(dtype)
    return transformer(
        hidden_states=hidden,
        timestep=timestep,
        encoder_hidden_states=text_emb.to(dtype),
        encoder_hidden_states_image=image_emb.to(dtype),
        return_dict=False,
    )[0]


def forward_batch(
    transformer: torch.nn.Module, batch: dict, noisy: torch.Tensor, timestep: torch.Tensor
) -> torch.Tensor:
    """The training loop's `forward_fn` for precomputed batches (cond, text_emb, image_emb)."""
    return predict_flow(
        transformer, noisy, timestep, batch["cond"], batch["text_emb"], batch["image_emb"]
    )


def frame_mask(
    batch: int, num_frames: int, latent_hw: tuple[int, int], t_stride: int, like: torch.Tensor
) -> torch.Tensor:
    """Wan's 4-channel mask: 1 for the given first frame, 0 elsewhere; the first frame is
    repeated `t_stride` times so the pixel-frame axis folds into 4 channels per latent frame."""
    h, w = latent_hw
    mask = torch.zeros(batch, 1, num_frames, h, w, device=like.device, dtype=like.dtype)
    mask[:, :, 0] = 1
    mask = torch.cat([mask[:, :, :1].repeat_interleave(t_stride, dim=2), mask[:, :, 1:]], dim=2)
    return mask.view(batch, -1, t_stride, h, w).transpose(1, 2)
