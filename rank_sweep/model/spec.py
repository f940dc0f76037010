"""Wan I2V spec: resolve the model dir, load the pipeline parts, and build the exact
conditioning `WanImageToVideoPipeline` builds (finetrainers-style: the spec owns loading
and conditioning, the training loop only sees tensors).

One spec serves the Wan2.1 I2V layout (36-channel input: noise + mask + first-frame latent,
CLIP image tokens) and Wan2.2: A14B (two experts switched at `boundary_ratio`, loaded as
one `WanExperts` module) and TI2V-5B (`expand_timesteps`: the first latent frame is the
clean image latent with timestep 0 on its tokens; 48-channel VAE with stride 16).

Encoders are loaded lazily. `free_encoders()` drops the UMT5 text encoder and the CLIP
image encoder (the big ones: ~11 GB for umt5-xxl) once embeddings are precomputed; the
VAE stays, because evaluation needs its encoder for the first-frame condition and its
decoder for the generated videos.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from rank_sweep.integrity import safetensors_dir_whole
from rank_sweep.model.layout import ModelError, missing_parts, pipeline_options

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
    arch = str(getattr(model_cfg, "arch", "wan2.1_i2v"))
    stem = "tiny_wan" if arch == "wan2.1_i2v" else f"tiny_{arch}"
    final = cache_dir() / "models" / f"{stem}-s{int(model_cfg.tiny_seed)}"
    if not missing_parts(final):
        if safetensors_dir_whole(final):
            return final
        log.warning("cached tiny model %s has a truncated weight file: rebuilding it", final)
        shutil.rmtree(final, ignore_errors=True)
    from rank_sweep.model.tiny22 import write_tiny_once
    from rank_sweep.seeding import forked_rng

    with forked_rng():  # the tiny model seeds itself; the caller's RNG stays untouched
        return write_tiny_once(final, int(model_cfg.tiny_seed), arch)


MODEL_DTYPES = ("float32", "bfloat16", "float16")  # what model.dtype may say


def _dtype(name: str | torch.dtype | None) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in MODEL_DTYPES:
        raise ModelError(f"model.dtype={name!r} is not supported; allowed: {list(MODEL_DTYPES)}")
    return getattr(torch, name)


@dataclass
class WanSpec:
    path: Path
    device: torch.device
    dtype: torch.dtype  # frozen text encoder dtype; VAE and CLIP stay float32 (as Wan does)
    shift: float
    _parts: dict[str, Any] = field(default_factory=dict, repr=False)
    _options: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_config(
        cls, model_cfg: Any, device: torch.device, dtype: torch.dtype | None = None
    ) -> WanSpec:
        spec = cls(
            path=resolve_model_path(model_cfg),
            device=torch.device(device),
            dtype=dtype if dtype is not None else _dtype(model_cfg.dtype),
            shift=float(model_cfg.flow_shift),
        )
        spec.check_arch(str(getattr(model_cfg, "arch", "wan2.1_i2v")))
        return spec

    # ---- properties -------------------------------------------------------------------
    @cached_property
    def vae_scale(self) -> tuple[int, int]:
        """(temporal, spatial) stride of the VAE: 4 and 8 for every Wan2.1 VAE (read once)."""
        cfg = json.loads((self.path / "vae" / "config.json").read_text())
        return int(cfg.get("scale_factor_temporal", 4)), int(cfg.get("scale_factor_spatial", 8))

    def transformer_config(self) -> dict:
        return json.loads((self.path / "transformer" / "config.json").read_text())

    @property
    def options(self) -> dict:
        """{boundary_ratio, expand_timesteps} from the dir's model_index.json."""
        if self._options is None:
            self._options = pipeline_options(self.path)
        return self._options

    @property
    def boundary_ratio(self) -> float | None:
        return self.options["boundary_ratio"]

    @property
    def expand_timesteps(self) -> bool:
        return self.options["expand_timesteps"]

    @property
    def latent_channels(self) -> int:
        return int(json.loads((self.path / "vae" / "config.json").read_text())["z_dim"])

    @property
    def has_image_encoder(self) -> bool:
        return self.transformer_config().get("image_dim") is not None

    def check_arch(self, arch: str) -> None:
        """One-line error when `model.arch` and the dir's layout disagree."""
        found = (
            "wan2.2_i2v_a14b"
            if self.boundary_ratio is not None
            else "wan2.2_ti2v_5b"
            if self.expand_timesteps
            else "wan2.1_i2v"
        )
        if arch != found:
            raise ModelError(f"model.arch={arch} but {self.path} holds a {found} pipeline")

    # ---- loading ----------------------------------------------------------------------
    def load_transformer(self, dtype: torch.dtype = torch.float32):
        """The denoiser: one WanTransformer3DModel, or both Wan2.2 A14B experts as one
        `WanExperts` module switched at the boundary (the pipeline's rule)."""
        from diffusers import WanTransformer3DModel

        def one(sub: str):
            return WanTransformer3DModel.from_pretrained(
                self.path, subfolder=sub, torch_dtype=dtype
            )

        if self.boundary_ratio is None:
            return one("transformer").to(self.device)
        from rank_sweep.model.experts import WanExperts

        experts = WanExperts(one("transformer"), one("transformer_2"), self.boundary_ratio)
        return experts.to(self.device)

    def load_scheduler(self):
        """The model dir's scheduler with this spec's flow shift (3.0 at 480p, 5.0 at 720p)."""
        import diffusers

        cfg = json.loads((self.path / "scheduler" / "scheduler_config.json").read_text())
        cls = getattr(diffusers, cfg["_class_name"])
        key = "flow_shift" if "flow_shift" in cfg else "shift"
        return cls.from_config(cfg, **{key: self.shift})

    def load_encoders(self) -> None:
        names = ["vae", "text_encoder", "tokenizer"]
        if self.has_image_encoder:
            names += ["image_encoder", "image_processor"]
        for name in names:
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
        """CLIP penultimate hidden states [B, N, Dclip] of uint8 [B, H, W, 3] frames; an
        empty [B, 0, 1] for Wan2.2, which sees the image only through its latent."""
        if not self.has_image_encoder:
            return torch.zeros(images.shape[0], 0, 1)
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
        if self.expand_timesteps:  # TI2V-5B: [B, z, 1, H', W'], the clean first-frame latent
            return self.encode_video(ff)
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
        """Flow prediction (noise - x0) of the transformer for this spec's I2V input."""
        return predict_flow(transformer, noisy, timestep, cond, text_emb, image_emb)

    def finalize_latents(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """After sampling: TI2V-5B puts the clean first-frame latent back (the pipeline does)."""
        if not self.expand_timesteps:
            return latents
        return torch.cat([cond.to(latents.dtype), latents[:, :, 1:]], dim=2)


def _config(transformer: torch.nn.Module):
    return getattr(transformer, "module", transformer).config  # DeepSpeed keeps it inside


def expands_timesteps(transformer: torch.nn.Module) -> bool:
    """TI2V-5B takes the latent itself (in = out channels); I2V models take 16 + 20."""
    cfg = _config(transformer)
    return int(cfg.in_channels) == int(cfg.out_channels)


def predict_flow(
    transformer: torch.nn.Module,
    noisy: torch.Tensor,
    timestep: torch.Tensor,
    cond: torch.Tensor,
    text_emb: torch.Tensor,
    image_emb: torch.Tensor | None,
) -> torch.Tensor:
    """Flow prediction (noise - x0) with the pipeline's input rule: Wan2.1/Wan2.2-A14B get
    noisy latent (16) + I2V condition (20) = 36 channels; TI2V-5B gets the noisy latent with
    its first frame replaced by the clean image latent and per-token timesteps that are 0 on
    that frame (`expand_timesteps`)."""
    # diffusers' ModelMixin.dtype skips _keep_in_fp32_modules (Wan keeps norms, time
    # embedder and modulation tables in fp32 even in a bf16 model)
    inner = getattr(transformer, "module", transformer)  # a DeepSpeed wrapper's model
    dtype = getattr(inner, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        dtype = next(transformer.parameters()).dtype
    cfg = _config(transformer)
    if expands_timesteps(transformer):
        keep = torch.ones_like(noisy[:, :1])
        keep[:, :, 0] = 0  # 0 on the given first frame, 1 where the model denoises
        hidden = ((1 - keep) * cond.to(noisy.dtype) + keep * noisy).to(dtype)
        _, ph, pw = cfg.patch_size
        per_token = keep[:, 0, :, ::ph, ::pw] * timestep.to(keep.dtype).view(-1, 1, 1, 1)
        timestep = per_token.flatten(1)
    else:
        hidden = torch.cat([noisy, cond.to(noisy.dtype)], dim=1).to(dtype)
    if cfg.image_dim is None or image_emb is None or image_emb.shape[1] == 0:
        image_emb = None  # Wan2.2 has no CLIP branch
    else:
        image_emb = image_emb.to(dtype)
    return transformer(
        hidden_states=hidden,
        timestep=timestep,
        encoder_hidden_states=text_emb.to(dtype),
        encoder_hidden_states_image=image_emb,
        return_dict=False,
    )[0]


def forward_batch(
    transformer: torch.nn.Module, batch: dict, noisy: torch.Tensor, timestep: torch.Tensor
) -> torch.Tensor:
    """The training loop's `forward_fn` for precomputed batches (cond, text_emb, image_emb).

    TI2V-5B: the first latent frame is given, not predicted, so its prediction is replaced
    by its exact target (noisy - x0) / sigma and adds no loss or gradient, as trainers that
    drop frame 0 from the loss do (up to the (T-1)/T averaging factor)."""
    pred = predict_flow(
        transformer, noisy, timestep, batch["cond"], batch["text_emb"], batch["image_emb"]
    )
    if not expands_timesteps(transformer):
        return pred
    sigma = (timestep.float() / 1000.0).view(-1, 1, 1, 1, 1)
    x0 = batch["latents"].to(noisy.dtype)
    first = ((noisy[:, :, :1] - x0[:, :, :1]) / sigma).to(pred.dtype)
    return torch.cat([first, pred[:, :, 1:]], dim=2)


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
