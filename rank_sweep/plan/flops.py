"""FLOPs of the Wan I2V transformer from its config: tokens from the clip shape, forward
FLOPs per sample, training FLOPs per sample (LoRA or full, with or without activation
recompute) and sampling FLOPs per generated clip. Pure functions; a multiply-add is 2
FLOPs; norms, rotary embeddings and softmax are left out (a few percent).

  S = T' * (H'/ph) * (W'/pw) video tokens, T' = (frames-1)/4 + 1, H' = H/8, W' = W/8
  d = heads * head_dim, F = ffn_dim, L = layers, Ct = 512 text tokens, Ci image tokens
  per-block forward:
    linear = 2*S*d*d*4 (self q,k,v,out) + 2*S*d*d*2 (cross q,out)
           + 2*Ct*d*d*2 (cross k,v) + 2*Ci*kv*d*2 (add_k, add_v)  + 2*S*d*F*2 (ffn)
    attn   = 4*S*S*d + 4*S*(Ct+Ci)*d
  training: full = 3 x forward; LoRA (base frozen) = 2 x linear (forward + input grad)
    + 3 x attn + 3 x 2*N*r*(in+out) per adapted Linear; recompute adds one more block
    forward per layer. At 14B 480p x 81 frames LoRA with recompute gives 5.95 PFLOP, the
    public ~5.9 PFLOP figure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEXT_TOKENS = 512  # Wan pads text to exactly 512 tokens
IMAGE_TOKENS = 257  # CLIP ViT-H/14 at 224: 16*16 patches + class token


@dataclass(frozen=True)
class ClipShape:
    frames: int
    height: int
    width: int


@dataclass(frozen=True)
class Arch:
    """What the FLOP and memory formulas need from a WanTransformer3DModel config."""

    layers: int
    dim: int
    ffn: int
    kv_dim: int
    text_dim: int
    image_dim: int
    in_channels: int
    out_channels: int
    freq_dim: int
    patch: tuple[int, int, int]
    vae_stride: tuple[int, int, int] = (4, 8, 8)
    image_tokens: int = IMAGE_TOKENS

    @classmethod
    def from_config(cls, cfg: dict, vae_stride: tuple[int, int, int] = (4, 8, 8)) -> Arch:
        d = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
        return cls(
            layers=int(cfg["num_layers"]),
            dim=d,
            ffn=int(cfg["ffn_dim"]),
            kv_dim=int(cfg.get("added_kv_proj_dim") or 0),
            text_dim=int(cfg["text_dim"]),
            image_dim=int(cfg.get("image_dim") or 0),
            in_channels=int(cfg["in_channels"]),
            out_channels=int(cfg["out_channels"]),
            freq_dim=int(cfg["freq_dim"]),
            patch=tuple(int(p) for p in cfg["patch_size"]),  # type: ignore[arg-type]
            vae_stride=vae_stride,
        )

    # ---- tokens ----------------------------------------------------------------------
    def latent_shape(self, clip: ClipShape) -> tuple[int, int, int]:
        st, sh, sw = self.vae_stride
        return (clip.frames - 1) // st + 1, clip.height // sh, clip.width // sw

    def tokens(self, clip: ClipShape) -> int:
        t, h, w = self.latent_shape(clip)
        pt, ph, pw = self.patch
        return math.ceil(t / pt) * (h // ph) * (w // pw)

    # ---- parameters --------------------------------------------------------------------
    def block_params(self) -> int:
        d, f, kv = self.dim, self.ffn, self.kv_dim
        p = 8 * (d * d + d)  # self and cross attention q, k, v, out (with bias)
        p += 4 * d  # rms q/k norms of both attentions (across heads)
        if kv:
            p += 2 * (kv * d + d) + d  # add_k_proj, add_v_proj, norm_added_k
        p += 2 * d  # cross-attention LayerNorm (affine)
        p += d * f + f + f * d + d  # ffn
        p += 6 * d  # scale_shift_table
        return p

    def outside_params(self) -> int:
        d, pt, ph, pw = self.dim, *self.patch
        patch = pt * ph * pw
        p = self.in_channels * patch * d + d  # patch embedding (Conv3d)
        p += self.freq_dim * d + d + d * d + d  # time embedding MLP
        p += d * 6 * d + 6 * d  # time projection to the 6 modulation vectors
        p += self.text_dim * d + d + d * d + d  # text embedder MLP
        if self.image_dim:
            i = self.image_dim
            p += 2 * i + i * i + i + i * d + d + 2 * d  # image embedder: LN, MLP, LN
        p += d * self.out_channels * patch + self.out_channels * patch + 2 * d  # proj_out, table
        return p

    def total_params(self) -> int:
        return self.layers * self.block_params() + self.outside_params()

    # ---- FLOPs -------------------------------------------------------------------------
    def _linear_fwd(self, s: int) -> float:
        d, f, kv = self.dim, self.ffn, self.kv_dim or self.dim
        ci = self.image_tokens if self.image_dim else 0
        return 2 * s * d * d * 6 + 2 * TEXT_TOKENS * d * d * 2 + 2 * ci * kv * d * 2 + 4 * s * d * f

    def _attn_fwd(self, s: int) -> float:
        ci = self.image_tokens if self.image_dim else 0
        return 4 * s * s * self.dim + 4 * s * (TEXT_TOKENS + ci) * self.dim

    def _outside_fwd(self, s: int) -> float:
        d, patch = self.dim, self.patch[0] * self.patch[1] * self.patch[2]
        out = 2 * s * self.in_channels * patch * d + 2 * s * d * self.out_channels * patch
        out += 2 * TEXT_TOKENS * (self.text_dim * d + d * d)
        if self.image_dim:
            out += 2 * self.image_tokens * (self.image_dim**2 + self.image_dim * d)
        return out

    def forward_flops(self, clip: ClipShape) -> float:
        """One transformer forward of one sample (one denoising call, no CFG)."""
        s = self.tokens(clip)
        return self.layers * (self._linear_fwd(s) + self._attn_fwd(s)) + self._outside_fwd(s)

    def train_flops(
        self, clip: ClipShape, lora_rank: int | None, recompute: bool, lora_targets: int = 12
    ) -> float:
        """Executed FLOPs of one training sample (forward + backward [+ recompute]).
        lora_rank None = full fine-tuning. `lora_targets` < 12 scales the adapter term."""
        s = self.tokens(clip)
        linear, attn, outside = self._linear_fwd(s), self._attn_fwd(s), self._outside_fwd(s)
        if lora_rank is None:
            flops = 3 * (self.layers * (linear + attn) + outside)
        else:
            d, f, kv = self.dim, self.ffn, self.kv_dim or self.dim
            ci = self.image_tokens if self.image_dim else 0
            adapted = [(s, d, d)] * 6 + [(TEXT_TOKENS, d, d)] * 2 + [(ci, kv, d)] * 2
            adapted += [(s, d, f), (s, f, d)]
            lora = sum(6 * n * lora_rank * (i + o) for n, i, o in adapted) * lora_targets / 12
            flops = self.layers * (2 * linear + 3 * attn + lora) + 2 * outside
        if recompute:
            flops += self.layers * (linear + attn)
        return float(flops)

    def sample_flops(self, clip: ClipShape, steps: int, guidance_scale: float) -> float:
        """One generated clip: `steps` denoising calls, twice each under CFG (> 1)."""
        calls = steps * (2 if guidance_scale > 1 else 1)
        return calls * self.forward_flops(clip)

    # ---- activation bytes ----------------------------------------------------------------
    def block_activation_bytes(self, clip: ClipShape, act_bytes: int = 2) -> float:
        """Tensors one block keeps for backward per sample: ~12 d-wide and 2 F-wide
        tensors in the compute dtype, plus 3 fp32 residual/modulation copies (flash
        attention: no S x S scores kept)."""
        s = self.tokens(clip)
        return s * (12 * self.dim * act_bytes + 2 * self.ffn * act_bytes + 3 * self.dim * 4)


def transformer_config_for(model_cfg: Any) -> tuple[dict, tuple[int, int, int]]:
    """(transformer config, VAE stride) of `model`: read from model.path when it is on disk,
    else the known config of the named model (the 14B files need not be present to plan)."""
    path = Path(str(model_cfg.path)).expanduser() if model_cfg.get("path") else None
    if path is not None and (path / "transformer" / "config.json").exists():
        cfg = json.loads((path / "transformer" / "config.json").read_text())
        stride = (4, 8, 8)
        vae = path / "vae" / "config.json"
        if vae.exists():
            v = json.loads(vae.read_text())
            sp = int(v.get("scale_factor_spatial", 8))
            stride = (int(v.get("scale_factor_temporal", 4)), sp, sp)
        return cfg, stride
    name = str(model_cfg.name)
    if path is None:
        from rank_sweep.model.tiny import TRANSFORMER_CONFIG

        return dict(TRANSFORMER_CONFIG), (4, 8, 8)
    if "14b" in name.lower():
        from rank_sweep.model.meta import WAN_I2V_14B_CONFIG

        return dict(WAN_I2V_14B_CONFIG), (4, 8, 8)
    raise ValueError(
        f"model.path={path} has no transformer/config.json and model.name={name!r} has no "
        "built-in config: point model.path at the diffusers model dir to plan it"
    )
