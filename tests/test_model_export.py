"""Alpha-safe LoRA files: the diffusers file under a plain alpha = rank peft config, and the
ComfyUI/musubi export through diffusers' own non-diffusers Wan converter, both reproduce
the trained outputs for every alpha mode and for small and large ranks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rank_sweep.config.schema import LoraConfig
from rank_sweep.model.adapters import LORA_WEIGHT_NAME, apply_finetune, save_result
from rank_sweep.model.export import COMFY_WEIGHT_NAME, DIFFUSERS_TO_WAN, adapter_metadata


def _load(tiny: Path):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(tiny, subfolder="transformer")


def _inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, 36, 3, 4, 4, generator=g),
        timestep=torch.tensor([400.0]),
        encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
        encoder_hidden_states_image=torch.randn(1, 17, 32, generator=g),
        return_dict=False,
    )


def _train_stand_in(model: torch.nn.Module, seed: int = 1) -> None:
    """Stand-in for training: move both LoRA factors (B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif "lora_A" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


@pytest.mark.parametrize("rank", [4, 64])
@pytest.mark.parametrize("mode", ["fixed", "ratio", "rslora"])
def test_files_reproduce_trained_outputs(
    tiny_wan_dir: Path, tmp_path: Path, mode: str, rank: int
) -> None:
    from diffusers import WanImageToVideoPipeline
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    trained = _load(tiny_wan_dir)
    lcfg = LoraConfig(rank=rank, alpha=16.0, alpha_mode=mode, alpha_ratio=3.0)
    apply_finetune(trained, "lora", lcfg)
    _train_stand_in(trained)
    trained.eval()
    main = save_result(trained, "lora", tmp_path, {"rank": rank}, save_dtype="float32")
    assert main == tmp_path / LORA_WEIGHT_NAME and not list(tmp_path.glob(".*"))
    with torch.no_grad():
        ours = trained(**_inputs())[0]
        base = _load(tiny_wan_dir)(**_inputs())[0]
    assert (ours - base).abs().max() > 1e-2  # the adapter really changes the output

    # (a) diffusers-layout file + a plain peft config whose alpha equals the rank
    tensors, header = _read(main)
    assert header["rank_sweep.trained_use_rslora"] == str(mode == "rslora")
    plain = _load(tiny_wan_dir)
    targets = "|".join(re.escape(t) for t in lcfg.target_modules)
    inject_adapter_in_model(
        PeftLoraConfig(r=rank, lora_alpha=rank, target_modules=rf"^blocks\.\d+\.({targets})$"),
        plain,
    )
    sd = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    result = set_peft_model_state_dict(plain, sd)
    assert not result.unexpected_keys
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**_inputs())[0], ours, atol=2e-5, rtol=1e-4)

    # diffusers' own loader reads alpha = rank from the metadata: same outputs
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_dir)
    pipe.load_lora_weights(tmp_path)
    (loaded,) = pipe.transformer.peft_config.values()
    assert loaded.lora_alpha == rank and not loaded.use_rslora
    with torch.no_grad():
        torch.testing.assert_close(pipe.transformer(**_inputs())[0], ours, atol=2e-5, rtol=1e-4)

    # (b) ComfyUI/musubi export through diffusers' non-diffusers Wan converter
    comfy, _ = _read(tmp_path / COMFY_WEIGHT_NAME)
    assert all(k.startswith("diffusion_model.blocks.") for k in comfy)
    alphas = {k: v for k, v in comfy.items() if k.endswith(".alpha")}
    assert len(alphas) == 2 * len(DIFFUSERS_TO_WAN) and all(
        v.item() == rank for v in alphas.values()
    )
    assert "diffusion_model.blocks.1.cross_attn.k_img.lora_down.weight" in comfy
    assert "diffusion_model.blocks.0.ffn.2.lora_up.weight" in comfy
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_dir)
    pipe.load_lora_weights(str(tmp_path / COMFY_WEIGHT_NAME))
    with torch.no_grad():
        torch.testing.assert_close(pipe.transformer(**_inputs())[0], ours, atol=2e-5, rtol=1e-4)


def test_bf16_default_halves_the_file_and_stays_close(tiny_wan_dir: Path, tmp_path: Path) -> None:
    model = _load(tiny_wan_dir)
    apply_finetune(model, "lora", LoraConfig(rank=8))
    _train_stand_in(model)
    save_result(model, "lora", tmp_path / "bf16", None)  # the default save dtype
    save_result(model, "lora", tmp_path / "fp32", None, save_dtype="float32")
    for name in (LORA_WEIGHT_NAME, COMFY_WEIGHT_NAME):
        b, f = tmp_path / "bf16" / name, tmp_path / "fp32" / name
        tensors, header = _read(b)
        assert {v.dtype for v in tensors.values()} == {torch.bfloat16}
        assert header["rank_sweep.dtype"] == "bfloat16"
        assert 0.45 < b.stat().st_size / f.stat().st_size < 0.55


def test_export_cli_from_a_run_dir(tiny_wan_dir: Path, tmp_path: Path) -> None:
    from rank_sweep.model.__main__ import main

    model = _load(tiny_wan_dir)
    apply_finetune(model, "lora", LoraConfig(rank=4, alpha_mode="rslora"))
    _train_stand_in(model)
    save_result(model, "lora", tmp_path / "job" / "adapter", None, save_dtype="float32")
    out = tmp_path / "out" / "x.safetensors"
    args = ["export-lora", "--run", str(tmp_path / "job"), "--dtype", "fp32", "--out", str(out)]
    assert main([*args, "--format", "comfyui"]) == 0
    ref, _ = _read(tmp_path / "job" / "adapter" / COMFY_WEIGHT_NAME)
    got, _ = _read(out)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert main([*args, "--format", "diffusers"]) == 0
    ref, _ = _read(tmp_path / "job" / "adapter" / LORA_WEIGHT_NAME)
    got, header = _read(out)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    meta = adapter_metadata(header)
    assert meta["lora_alpha"] == meta["r"] == 4 and meta["target_modules"]
    assert main([*args[:2], str(tmp_path / "nowhere"), *args[3:]]) == 2


def test_export_folds_files_written_with_a_trained_alpha(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    """A file that still keeps alpha in its metadata (the pre-fold format) exports right."""
    from diffusers import WanImageToVideoPipeline
    from peft.utils import get_peft_model_state_dict

    from rank_sweep.model.export import export_file

    model = _load(tiny_wan_dir)
    apply_finetune(model, "lora", LoraConfig(rank=4, alpha=16.0))  # scale 4
    _train_stand_in(model)
    WanImageToVideoPipeline.save_lora_weights(
        tmp_path,
        transformer_lora_layers=get_peft_model_state_dict(model),
        transformer_lora_adapter_metadata=model.peft_config["default"].to_dict(),
    )
    out = export_file(
        tmp_path / LORA_WEIGHT_NAME, "comfyui", torch.float32, tmp_path / "c.safetensors"
    )
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_dir)
    pipe.load_lora_weights(str(out))
    with torch.no_grad():
        ref = model.eval()(**_inputs())[0]
        torch.testing.assert_close(pipe.transformer(**_inputs())[0], ref, atol=2e-5, rtol=1e-4)
