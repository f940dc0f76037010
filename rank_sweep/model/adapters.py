"""LoRA (peft) or full fine-tuning on the Wan transformer, parameter counts, and saving
results in the formats diffusers loads (`load_lora_weights` / `from_pretrained`)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from rank_sweep.model.layout import ModelError
from rank_sweep.utils.atomic import atomic_file, replace_dir

log = logging.getLogger(__name__)

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
ALPHA_MODES = ("fixed", "ratio", "rslora")
METHODS = ("lora", "full")


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
    _check_targets(target_modules, list(shapes))
    per_block = sum(rank * (shapes[n][0] + shapes[n][1]) for n in target_modules)
    return per_block * int(transformer_config["num_layers"])


def _check_targets(target_modules: list[str], valid: list[str]) -> None:
    if not target_modules:
        raise ModelError(f"lora.target_modules is empty; allowed: {', '.join(valid)}")
    unknown = [t for t in target_modules if t not in valid]
    if unknown:
        raise ModelError(
            f"lora.target_modules has unknown names {unknown}; allowed: {', '.join(valid)}"
        )


def target_regex(target_modules: list[str]) -> str:
    """peft full-match pattern restricted to the transformer blocks ("blocks.N.<name>")."""
    names = "|".join(re.escape(t) for t in target_modules)
    return rf"^blocks\.\d+\.({names})$"


def block_linear_names(transformer: torch.nn.Module) -> list[str]:
    block = transformer.blocks[0]
    return [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]


def make_lora_config(lora_cfg: Any, valid: list[str]):
    from peft import LoraConfig

    targets = list(lora_cfg.target_modules)
    _check_targets(targets, valid)
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
    """Make `transformer` trainable per `method`; returns the trainable parameter count."""
    if method == "lora":
        config = make_lora_config(lora_cfg, block_linear_names(transformer))
        transformer.requires_grad_(False)
        transformer.add_adapter(config)  # diffusers' PeftAdapterMixin: keeps peft_config
        for name, p in transformer.named_parameters():
            p.requires_grad_("lora_" in name)
    elif method == "full":
        transformer.requires_grad_(True)
    else:
        raise ModelError(
            f"finetune.method={method!r} is not supported; allowed: {', '.join(METHODS)}"
        )
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
    transformer: torch.nn.Module, method: str, out_dir: Path, lora_meta: dict | None = None
) -> Path:
    """Write the fine-tuning result atomically; returns the written file or directory.

    lora: `pytorch_lora_weights.safetensors` via diffusers with the peft LoraConfig as
    adapter metadata, so `load_lora_weights` rebuilds the same lora_alpha and use_rslora
    (alpha/sqrt(r) scaling included). `lora_meta` (rank, alpha_mode, ...) is added to
    the safetensors header under `rank_sweep.*` keys for bookkeeping.
    full: `transformer/` via `save_pretrained`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if method == "lora":
        return _save_lora(transformer, out_dir, lora_meta)
    if method == "full":
        return replace_dir(
            out_dir / "transformer",
            lambda tmp: transformer.save_pretrained(tmp, safe_serialization=True),
        )
    raise ModelError(f"finetune.method={method!r} is not supported; allowed: {', '.join(METHODS)}")


def _save_lora(transformer: torch.nn.Module, out_dir: Path, lora_meta: dict | None) -> Path:
    from diffusers import WanImageToVideoPipeline
    from peft.utils import get_peft_model_state_dict

    layers = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    metadata = transformer.peft_config["default"].to_dict()
    final = out_dir / LORA_WEIGHT_NAME
    with atomic_file(final) as tmp:
        WanImageToVideoPipeline.save_lora_weights(
            tmp.parent,
            transformer_lora_layers=layers,
            weight_name=tmp.name,
            transformer_lora_adapter_metadata=metadata,
        )
        if lora_meta:
            _append_header(tmp, lora_meta)
    return final


def _append_header(path: Path, lora_meta: dict) -> None:
    """Re-write the file with extra `rank_sweep.*` header entries (peft never sees them:
    diffusers only reads the `lora_adapter_metadata` key)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header.update({f"rank_sweep.{k}": str(v) for k, v in lora_meta.items()})
    save_file(tensors, str(path), metadata=header)
