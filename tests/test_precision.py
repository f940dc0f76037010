"""Precision as practitioners run it, through a real tiny LoRA job: frozen base in bf16
(model.dtype=bfloat16), adapter trained in fp32, LoRA file saved in bf16, and diffusers'
`load_lora_weights` reproduces the trained model's outputs within bf16 tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rank_sweep.model.adapters import LORA_WEIGHT_NAME, apply_finetune, load_trainable_state_dict
from rank_sweep.model.spec import WanSpec, forward_batch
from rank_sweep.train.checkpoint import find_checkpoint, read_checkpoint
from rank_sweep.train.precision import base_dtype, upcast_trainable

JOB = [
    "model.dtype=bfloat16",
    "train.steps=4",
    "train.checkpoint_every=2",
    "finetune.lr=3e-4",  # x lr_scale 30: the adapter moves visibly in 4 steps
    "eval.every=4",
    "eval.num_real=4",
    "eval.num_fake=2",
    "eval.sample_steps=2",
    "eval.bootstrap=0",
    "eval.kid_subset_size=4",
    "eval.log_videos=0",
    "track=off",
    "prune=none",
]


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(cfg) -> tuple[dict, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    t, h, w = 3, 4, 4  # latent frames 9 -> 3, 32 px -> 4
    batch = {
        "cond": torch.randn(1, 20, t, h, w, generator=g),
        "text_emb": torch.randn(1, 512, 32, generator=g),
        "image_emb": torch.randn(1, 5, 32, generator=g),
    }
    return batch, torch.randn(1, 16, t, h, w, generator=g), torch.tensor([500.0])


@torch.no_grad()
def _out(model, inputs) -> torch.Tensor:
    batch, noisy, ts = inputs
    return forward_batch(model, batch, noisy, ts).float()


def test_lora_job_bf16_base_fp32_adapter_bf16_file(compose, tmp_path: Path, one_thread) -> None:
    from diffusers import WanImageToVideoPipeline

    from rank_sweep.job.identity import state_dir
    from rank_sweep.job.runner import run

    cfg = compose([*JOB, f"output_dir={tmp_path / 'out'}", f"state_dir={tmp_path / 'state'}"])
    outcome = run(cfg, tmp_path / "out")
    assert outcome.status == "completed" and outcome.summary["steps"] == 4

    # the base as the job loads it: bf16 frozen weights, fp32 adapters
    spec = WanSpec.from_config(cfg.model, device=torch.device("cpu"))
    trained = spec.load_transformer(dtype=base_dtype(cfg))
    apply_finetune(trained, "lora", cfg.lora)
    upcast_trainable(trained)
    keep32 = type(trained)._keep_in_fp32_modules  # diffusers keeps norms/time MLP in fp32
    frozen = {
        p.dtype
        for n, p in trained.named_parameters()
        if not p.requires_grad and not any(m in n for m in keep32)
    }
    n_bf16 = sum(p.numel() for p in trained.parameters() if p.dtype == torch.bfloat16)
    adapter = {p.dtype for p in trained.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and adapter == {torch.float32}
    assert n_bf16 > 0.8 * sum(p.numel() for p in trained.parameters() if not p.requires_grad)

    # the job's last checkpoint holds what the optimizer stepped: fp32 adapter weights
    weights = read_checkpoint(find_checkpoint(state_dir(cfg))).weights
    assert weights and {v.dtype for v in weights.values()} == {torch.float32}
    load_trainable_state_dict(trained, weights)

    # the saved LoRA file is bf16 (half the size of fp32)
    lora_file = tmp_path / "out" / "adapter" / LORA_WEIGHT_NAME
    with safe_open(str(lora_file), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}

    pipe = WanImageToVideoPipeline.from_pretrained(str(spec.path), torch_dtype=torch.bfloat16)
    inputs = _inputs(cfg)
    base_out = _out(pipe.transformer, inputs)
    pipe.load_lora_weights(str(lora_file.parent), weight_name=LORA_WEIGHT_NAME)
    loaded_out, trained_out = _out(pipe.transformer, inputs), _out(trained, inputs)
    moved = (trained_out - base_out).abs().max().item()
    err = (loaded_out - trained_out).abs().max().item()
    scale = trained_out.abs().max().item()
    assert err <= 2e-2 * scale  # bf16 has 8 mantissa bits
    assert moved > 4 * err  # and the adapter's effect is far above that tolerance
