"""LoRA/full fine-tuning: counts, checkpoint state, and results diffusers loads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rank_sweep.config.schema import LoraConfig
from rank_sweep.model.adapters import (
    LORA_WEIGHT_NAME,
    analytic_lora_params,
    apply_finetune,
    count_trainable,
    load_trainable_state_dict,
    lora_alpha_for,
    save_result,
    trainable_state_dict,
)
from rank_sweep.model.blocks import WAN_BLOCK_LINEARS
from rank_sweep.model.layout import ModelError


def _load(tiny: Path):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(tiny, subfolder="transformer")


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, 36, 3, 4, 4, generator=g),
        timestep=torch.tensor([400.0]),
        encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
        encoder_hidden_states_image=torch.randn(1, 17, 32, generator=g),
        return_dict=False,
    )


def _perturb_lora_b(model: torch.nn.Module, seed: int = 1) -> None:
    """Stand-in for training: B starts at zero, so the adapter would be a no-op otherwise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_alpha_modes() -> None:
    assert lora_alpha_for(8, 16.0, "fixed", 2.0) == (16.0, False)
    assert lora_alpha_for(8, 16.0, "ratio", 2.0) == (16.0, False)
    assert lora_alpha_for(64, 16.0, "ratio", 2.0) == (128.0, False)
    assert lora_alpha_for(64, 16.0, "rslora", 2.0) == (16.0, True)
    with pytest.raises(ModelError, match="alpha_mode='sqrt'.*fixed, ratio, rslora"):
        lora_alpha_for(8, 16.0, "sqrt", 2.0)


@pytest.mark.parametrize("mode", ["fixed", "ratio", "rslora"])
def test_lora_file_loaded_by_diffusers_reproduces_outputs(
    tiny_wan_dir: Path, tmp_path: Path, mode: str
) -> None:
    from diffusers import WanImageToVideoPipeline

    model = _load(tiny_wan_dir)
    apply_finetune(model, "lora", LoraConfig(rank=4, alpha=16.0, alpha_mode=mode, alpha_ratio=3.0))
    _perturb_lora_b(model)
    model.eval()
    path = save_result(
        model, "lora", tmp_path, {"rank": 4, "alpha_mode": mode}, save_dtype="float32"
    )
    assert path == tmp_path / LORA_WEIGHT_NAME and not list(tmp_path.glob(".*"))

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_dir)
    pipe.load_lora_weights(tmp_path)
    (loaded,) = pipe.transformer.peft_config.values()
    # alpha-safe file: the trained scale lives in lora_B, so the loader applies exactly 1
    assert loaded.lora_alpha == 4 and not loaded.use_rslora
    with torch.no_grad():
        ours = model(**_inputs())[0]
        theirs = pipe.transformer(**_inputs())[0]
        base = _load(tiny_wan_dir)(**_inputs())[0]
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert (ours - base).abs().max() > 1e-2  # the adapter really changes the output


def test_rslora_scale_differs_from_fixed(tiny_wan_dir: Path) -> None:
    outs = {}
    for mode in ("fixed", "rslora"):
        model = _load(tiny_wan_dir)
        apply_finetune(model, "lora", LoraConfig(rank=4, alpha=16.0, alpha_mode=mode))
        _perturb_lora_b(model)
        with torch.no_grad():
            outs[mode] = model.eval()(**_inputs())[0]
    assert (outs["fixed"] - outs["rslora"]).abs().max() > 1e-3


@pytest.mark.parametrize("rank", [1, 4, 16])
def test_trainable_counts_match_analytic(tiny_wan_dir: Path, rank: int) -> None:
    model = _load(tiny_wan_dir)
    n = apply_finetune(model, "lora", LoraConfig(rank=rank))
    config = json.loads((tiny_wan_dir / "transformer" / "config.json").read_text())
    assert (
        n == count_trainable(model) == analytic_lora_params(config, rank, list(WAN_BLOCK_LINEARS))
    )
    assert all("lora_" in k for k, p in model.named_parameters() if p.requires_grad)
    sub = ["attn1.to_q", "ffn.net.2"]
    model2 = _load(tiny_wan_dir)
    assert apply_finetune(
        model2, "lora", LoraConfig(rank=rank, target_modules=sub)
    ) == analytic_lora_params(config, rank, sub)


def test_full_finetune_counts_every_parameter(tiny_wan_dir: Path, tmp_path: Path) -> None:
    from diffusers import WanTransformer3DModel

    model = _load(tiny_wan_dir)
    total = sum(p.numel() for p in model.parameters())
    assert apply_finetune(model, "full", LoraConfig()) == total
    with torch.no_grad():
        model.proj_out.weight.add_(0.5)
    out = save_result(model, "full", tmp_path, None)
    again = WanTransformer3DModel.from_pretrained(out)
    torch.testing.assert_close(again.proj_out.weight, model.proj_out.weight)


def test_unknown_target_and_method_are_clear_errors(tiny_wan_dir: Path) -> None:
    model = _load(tiny_wan_dir)
    with pytest.raises(ModelError, match=r"unknown names \['attn1.to_qq'\]; allowed: attn1.to_q"):
        apply_finetune(model, "lora", LoraConfig(target_modules=["attn1.to_qq"]))
    with pytest.raises(ModelError, match="allowed: lora, full"):
        apply_finetune(model, "dora", LoraConfig())


def test_trainable_state_dict_round_trip(tiny_wan_dir: Path) -> None:
    a, b = _load(tiny_wan_dir), _load(tiny_wan_dir)
    apply_finetune(a, "lora", LoraConfig(rank=2))
    apply_finetune(b, "lora", LoraConfig(rank=2))
    _perturb_lora_b(a)
    sd = trainable_state_dict(a)
    assert sum(v.numel() for v in sd.values()) == count_trainable(a)
    load_trainable_state_dict(b, {k: v.clone() for k, v in sd.items()})
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(**_inputs())[0], a.eval()(**_inputs())[0])
    with pytest.raises(ModelError, match="does not match"):
        load_trainable_state_dict(b, {k: v for k, v in list(sd.items())[1:]})
