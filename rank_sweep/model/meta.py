"""The 14B/5B Wan transformers on the meta device: exact parameter counts with no weights.

Configs are the `transformer/config.json` files of the official diffusers checkpoints:
Wan2.1 I2V-14B (CLIP image branch), Wan2.2 I2V-A14B (two experts of the same size, image
only through the latent) and Wan2.2 TI2V-5B (48-channel latent, expanded timesteps)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rank_sweep.model.adapters import block_linear_names, count_trainable, make_lora_config

# transformer/config.json of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (720P is identical).
WAN_I2V_14B_CONFIG: dict = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "rope_max_seq_len": 1024,
}

# transformer/config.json (= transformer_2/config.json) of Wan-AI/Wan2.2-I2V-A14B-Diffusers:
# the 14B body without the CLIP branch; the pipeline holds two of them (high/low noise).
WAN22_I2V_A14B_CONFIG: dict = {
    **{k: v for k, v in WAN_I2V_14B_CONFIG.items() if k not in ("image_dim", "added_kv_proj_dim")},
    "image_dim": None,
    "added_kv_proj_dim": None,
}

# transformer/config.json of Wan-AI/Wan2.2-TI2V-5B-Diffusers: dim 3072, 30 layers, in=out=48.
WAN22_TI2V_5B_CONFIG: dict = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "in_channels": 48,
    "out_channels": 48,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 14336,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}


@dataclass(frozen=True)
class CountedModel:
    name: str
    config: dict
    experts: int  # transformers in the pipeline that a LoRA/full fine-tune can train


COUNTED_MODELS = (
    CountedModel("Wan2.1-I2V-14B", WAN_I2V_14B_CONFIG, 1),
    CountedModel("Wan2.2-I2V-A14B", WAN22_I2V_A14B_CONFIG, 2),
    CountedModel("Wan2.2-TI2V-5B", WAN22_TI2V_5B_CONFIG, 1),
)


def build_transformer_meta(config: dict):
    """WanTransformer3DModel with every parameter on the meta device (no allocation)."""
    from diffusers import WanTransformer3DModel

    cfg = dict(config)
    cfg["patch_size"] = tuple(cfg["patch_size"])
    with torch.device("meta"):
        return WanTransformer3DModel(**cfg)


def total_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_param_table(config: dict, ranks: list[int], target_modules: list[str]) -> dict[int, int]:
    """rank -> LoRA parameter count, by real peft injection into a meta-device model."""
    from peft import inject_adapter_in_model

    from rank_sweep.config.schema import LoraConfig

    table: dict[int, int] = {}
    for r in ranks:
        model = build_transformer_meta(config)
        lcfg = LoraConfig(rank=int(r), target_modules=list(target_modules))
        peft_cfg = make_lora_config(lcfg, block_linear_names(model))
        model.requires_grad_(False)
        inject_adapter_in_model(peft_cfg, model, low_cpu_mem_usage=True)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        table[int(r)] = count_trainable(model)
    return table
