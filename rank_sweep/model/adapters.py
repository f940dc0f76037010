"""LoRA (peft) or full fine-tuning on the Wan transformer, parameter counts, and saving
results in the formats diffusers loads (`load_lora_weights` / `from_pretrained`)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import torch

from rank_sweep.model.layout import ModelError
from rank_sweep.track import contract as C
from rank_sweep.utils.atomic import atomic_file, replace_dir

log = logging.getLogger(__name__)

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
ALPHA_MODES = ("fixed", "ratio", "rslora")
# "none" is the untrained base ("base, no fine-tune"): nothing trained, scored by the same
# final tier as every fine-tune so each gain is measured against it.
BASE_METHOD = C.METHOD_NONE
METHODS = (C.METHOD_LORA, C.METHOD_FULL, BASE_METHOD)


def lora_alpha_for(rank: int, alpha: float, mode: str, ratio: float) -> tuple[float, bool]:
    """(peft lora_alpha, use_rslora). Effective scale: fixed alpha/r, ratio const, rslora alpha/sqrt(r)."""
    if rank < 1:
        raise ModelError(f"lora.rank={rank} must be >= 1")
    if mode == "fixed":
        return float(alpha), False
    if mode == "ratio":
        return float(ratio) * rank, False
    if mode == "rslora":
        return float(alpha), True
    raise ModelError(
        f"lora.alpha_mode={mode!r} is not supported; allowed: {', '.join(ALPHA_MODES)}"
    )


def block_linear_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every Linear inside one Wan transformer block.

    Text and image context are projected to the model width before the blocks, so the
    cross-attention k/v (and add_k/add_v, from added_kv_proj_dim) map into `inner`."""
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    ffn = int(config["ffn_dim"])
    shapes = {f"attn1.{n}": (inner, inner) for n in ("to_q", "to_k", "to_v", "to_out.0")}
    shapes.update({f"attn2.{n}": (inner, inner) for n in ("to_q", "to_k", "to_v", "to_out.0")})
    if config.get("added_kv_proj_dim"):
        kv = int(config["added_kv_proj_dim"])
        shapes.update({"attn2.add_k_proj": (kv, inner), "attn2.add_v_proj": (kv, inner)})
    shapes.update({"ffn.net.0.proj": (inner, ffn), "ffn.net.2": (ffn, inner)})
    return shapes


def analytic_lora_params(transformer_config: dict, rank: int, target_modules: list[str]) -> int:
    """LoRA parameters from dimensions alone: r * (in + out) per adapted Linear, no bias."""
    shapes = block_linear_shapes(transformer_config)
    kept = _check_targets(target_modules, list(shapes))
    per_block = sum(rank * (shapes[n][0] + shapes[n][1]) for n in kept)
    return per_block * int(transformer_config["num_layers"])


# The CLIP image branch of Wan2.1 I2V; Wan2.2 (A14B, TI2V-5B) conditions on the image
# through the latent only, so these two are dropped there instead of failing the config.
IMAGE_BRANCH = ("attn2.add_k_proj", "attn2.add_v_proj")


def _check_targets(target_modules: list[str], valid: list[str]) -> list[str]:
    """The targets that exist in this architecture; raises on unknown or empty."""
    if not target_modules:
        raise ModelError(f"lora.target_modules is empty; allowed: {', '.join(valid)}")
    unknown = [t for t in target_modules if t not in valid and t not in IMAGE_BRANCH]
    if unknown:
        raise ModelError(
            f"lora.target_modules has unknown names {unknown}; allowed: {', '.join(valid)}"
        )
    kept = [t for t in target_modules if t in valid]
    if not kept:
        raise ModelError(
            f"lora.target_modules {target_modules} name no Linear of this model; "
            f"allowed: {', '.join(valid)}"
        )
    return kept


def target_regex(target_modules: list[str]) -> str:
    """peft full-match pattern restricted to the transformer blocks ("blocks.N.<name>")."""
    names = "|".join(re.escape(t) for t in target_modules)
    return rf"^blocks\.\d+\.({names})$"


def block_linear_names(transformer: torch.nn.Module) -> list[str]:
    block = transformer.blocks[0]
    return [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]


def make_lora_config(lora_cfg: Any, valid: list[str]):
    from peft import LoraConfig

    targets = _check_targets(list(lora_cfg.target_modules), valid)
    alpha, rslora = lora_alpha_for(
        int(lora_cfg.rank),
        float(lora_cfg.alpha),
        str(lora_cfg.alpha_mode),
        float(lora_cfg.alpha_ratio),
    )
    return LoraConfig(
        r=int(lora_cfg.rank),
        lora_alpha=alpha,
        use_rslora=rslora,
        lora_dropout=float(lora_cfg.dropout),
        target_modules=target_regex(targets),
        init_lora_weights=True,
    )


def apply_finetune(transformer: torch.nn.Module, method: str, lora_cfg: Any) -> int:
    """Make `transformer` trainable per `method`; returns the trainable parameter count.

    For a two-expert model (Wan2.2 A14B) only the experts chosen by `lora.experts` become
    trainable (LoRA or full), and their timestep range is recorded for the training loop."""
    from rank_sweep.model.experts import select_experts, set_train_range

    if method not in METHODS:
        raise ModelError(
            f"finetune.method={method!r} is not supported; allowed: {', '.join(METHODS)}"
        )
    transformer.requires_grad_(False)
    if method == BASE_METHOD:
        return 0
    chosen = select_experts(transformer, str(getattr(lora_cfg, "experts", "both")))
    for _, module in chosen:
        if method == "lora":
            config = make_lora_config(lora_cfg, block_linear_names(module))
            module.add_adapter(config)  # diffusers' PeftAdapterMixin: keeps peft_config
            for name, p in module.named_parameters():
                p.requires_grad_("lora_" in name)
        else:
            module.requires_grad_(True)
    set_train_range(transformer, chosen)
    n = count_trainable(transformer)
    log.info("finetune=%s: %d trainable parameters", method, n)
    return n


def count_trainable(module: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def trainable_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Exactly the trainable tensors (LoRA A/B for lora, everything for full), by name."""
    return {n: p.detach() for n, p in transformer.named_parameters() if p.requires_grad}


def load_trainable_state_dict(transformer: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    params = {n: p for n, p in transformer.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(sd)), sorted(set(sd) - set(params))
    if missing or extra:
        raise ModelError(
            f"trainable state does not match the model: missing {missing[:3]} "
            f"({len(missing)}), unexpected {extra[:3]} ({len(extra)})"
        )
    with torch.no_grad():
        for n, p in params.items():
            if sd[n].shape != p.shape:
                raise ModelError(
                    f"trainable state {n}: shape {tuple(sd[n].shape)} != {tuple(p.shape)}"
                )
            p.copy_(sd[n])


def save_result(
    transformer: torch.nn.Module,
    method: str,
    out_dir: Path,
    lora_meta: dict | None = None,
    save_dtype: str | torch.dtype = "bfloat16",
) -> Path:
    """Write the fine-tuning result atomically; returns the main written file or directory.

    lora: `pytorch_lora_weights.safetensors` (diffusers layout) and `lora_comfyui.safetensors`
    (ComfyUI / musubi-tuner layout) per trained expert, both alpha-safe: the trained scale
    (alpha/r, or alpha/sqrt(r) for rslora) is folded into lora_B and alpha = rank is written,
    so diffusers, peft with a plain `lora_alpha=r` config, ComfyUI and musubi all play the
    adapter at its trained strength. `lora_meta` (rank, alpha_mode, ...) goes into the
    safetensors header under `rank_sweep.*` keys for bookkeeping.
    full: `transformer/` (and `transformer_2/` for a trained Wan2.2 low-noise expert) via
    `save_pretrained`, in the training dtype.
    """
    from rank_sweep.model.experts import trained_experts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if method not in METHODS:
        raise ModelError(
            f"finetune.method={method!r} is not supported; allowed: {', '.join(METHODS)}"
        )
    experts = trained_experts(transformer)
    if not experts:
        raise ModelError("nothing to save: no expert of the model has trainable weights")
    written: list[Path] = []
    for slot, (expert, module) in enumerate(experts):
        if method == "lora":
            written.append(_save_lora(module, out_dir, lora_meta, save_dtype, expert, slot))
        else:
            written.append(_save_full(module, out_dir / expert.subfolder))
    return written[0]


def result_artifacts(out_dir: Path) -> list[Path]:
    """Everything `save_result` wrote into `out_dir` (files and model dirs), for logging."""
    return sorted(p for p in Path(out_dir).iterdir() if not p.name.startswith("."))


def _save_full(transformer: torch.nn.Module, final: Path) -> Path:
    return replace_dir(final, lambda tmp: transformer.save_pretrained(tmp, safe_serialization=True))


def effective_scale(lora_alpha: float, rank: int, use_rslora: bool) -> float:
    """What peft multiplies B @ A by: alpha/r, or alpha/sqrt(r) with rslora."""
    return float(lora_alpha) / (math.sqrt(rank) if use_rslora else rank)


def alpha_safe_layers(
    transformer: torch.nn.Module, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], int]:
    """(peft-named LoRA tensors with the scale folded into lora_B, rank).

    Folding keeps B @ A * scale exact up to one rounding of B in the save dtype; A stays as
    trained, so the file is also a valid starting point for further training at alpha = r."""
    from peft.utils import get_peft_model_state_dict

    cfg = transformer.peft_config["default"]
    rank = int(cfg.r)
    if cfg.rank_pattern or cfg.alpha_pattern:
        raise ModelError("per-module rank/alpha patterns are not supported by the export")
    scale = effective_scale(cfg.lora_alpha, rank, bool(cfg.use_rslora))
    layers = {}
    for k, v in get_peft_model_state_dict(transformer).items():
        v = v.detach().float()
        if ".lora_B." in k:
            v = v * scale
        layers[k] = v.to(dtype).contiguous()
    return layers, rank


def alpha_safe_metadata(transformer: torch.nn.Module, rank: int) -> dict:
    """The peft config as diffusers stores it, with alpha = rank and no rslora: the scale
    already lives in lora_B, so every loader must apply exactly 1.0."""
    meta = transformer.peft_config["default"].to_dict()
    meta.update(lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={})
    return meta


def _save_lora(
    transformer: torch.nn.Module,
    out_dir: Path,
    lora_meta: dict | None,
    save_dtype: str | torch.dtype,
    expert: Any,
    slot: int,
) -> Path:
    from diffusers import WanImageToVideoPipeline

    from rank_sweep.model.export import COMFY_WEIGHT_NAME, to_comfyui, write_safetensors
    from rank_sweep.model.spec import _dtype

    dtype = _dtype(save_dtype)
    layers, rank = alpha_safe_layers(transformer, dtype)
    trained = transformer.peft_config["default"]
    header = {
        "rank_sweep.trained_lora_alpha": str(float(trained.lora_alpha)),
        "rank_sweep.trained_use_rslora": str(bool(trained.use_rslora)),
        "rank_sweep.scale_folded_into_lora_B": "true",
        "rank_sweep.dtype": str(dtype).removeprefix("torch."),
        **expert.header(),
        **{f"rank_sweep.{k}": str(v) for k, v in (lora_meta or {}).items()},
    }
    # The first trained expert gets the plain names; a second one (Wan2.2 A14B with both
    # experts trained: always the low-noise one) gets its expert's suffix.
    suffix = "" if slot == 0 else f"_{expert.name}"
    name = LORA_WEIGHT_NAME.replace(".safetensors", f"{suffix}.safetensors")
    final = out_dir / name
    with atomic_file(final) as tmp:
        WanImageToVideoPipeline.save_lora_weights(
            tmp.parent,
            transformer_lora_layers=layers,
            weight_name=tmp.name,
            transformer_lora_adapter_metadata=alpha_safe_metadata(transformer, rank),
        )
        _append_header(tmp, header)
    comfy = to_comfyui({f"transformer.{k}": v for k, v in layers.items()}, rank, dtype)
    comfy_name = COMFY_WEIGHT_NAME.replace(".safetensors", f"{suffix}.safetensors")
    write_safetensors(comfy, out_dir / comfy_name, header)
    return final


def _append_header(path: Path, extra: dict[str, str]) -> None:
    """Re-write the file with extra `rank_sweep.*` header entries (peft never sees them:
    diffusers only reads the `lora_adapter_metadata` key)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header.update(extra)
    save_file(tensors, str(path), metadata=header)
