"""Wan2.2 through the same spec: both directory layouts, the A14B experts switched at the
boundary as WanImageToVideoPipeline does, TI2V-5B's expand_timesteps, per-expert LoRA and
full fine-tuning, expert timestep ranges in training, and files the pipeline loads back."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rank_sweep.config.schema import LoraConfig
from rank_sweep.model.adapters import LORA_WEIGHT_NAME, apply_finetune, save_result
from rank_sweep.model.experts import WanExperts, restrict_sigmas, sigma_range_of
from rank_sweep.model.export import COMFY_WEIGHT_NAME
from rank_sweep.model.layout import ModelError, missing_parts, pipeline_options
from rank_sweep.model.spec import WanSpec, forward_batch


def _spec(path: Path, arch: str) -> WanSpec:
    cfg = SimpleNamespace(path=str(path), dtype="float32", flow_shift=5.0, tiny_seed=0, arch=arch)
    return WanSpec.from_config(cfg, torch.device("cpu"))


def _frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (1, 32, 64, 3), dtype=torch.uint8, generator=g)


def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _inputs(seed: int = 0, t: float = 300.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, 36, 3, 4, 4, generator=g),
        timestep=torch.tensor([t]),
        encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
        return_dict=False,
    )


def test_both_layouts(tiny_wan22_a14b_dir: Path, tiny_wan22_ti2v_dir: Path, tmp_path) -> None:
    assert missing_parts(tiny_wan22_a14b_dir) == [] and missing_parts(tiny_wan22_ti2v_dir) == []
    assert pipeline_options(tiny_wan22_a14b_dir) == {
        "boundary_ratio": 0.9,
        "expand_timesteps": False,
    }
    assert pipeline_options(tiny_wan22_ti2v_dir)["expand_timesteps"] is True
    broken = tmp_path / "a14b"
    shutil.copytree(tiny_wan22_a14b_dir, broken)
    shutil.rmtree(broken / "transformer_2")
    assert any(m.startswith("transformer_2/") for m in missing_parts(broken))
    with pytest.raises(ModelError, match="model.arch=wan2.1_i2v but .* wan2.2_ti2v_5b"):
        _spec(tiny_wan22_ti2v_dir, "wan2.1_i2v")


def test_experts_switch_at_the_boundary(tiny_wan22_a14b_dir: Path) -> None:
    model = _spec(tiny_wan22_a14b_dir, "wan2.2_i2v_a14b").load_transformer().eval()
    assert isinstance(model, WanExperts) and model.boundary_timestep == 900.0
    with torch.no_grad():
        for t, expert in ((950.0, model.transformer), (899.0, model.transformer_2)):
            torch.testing.assert_close(model(**_inputs(t=t))[0], expert(**_inputs(t=t))[0])
        hi, lo = _inputs(t=950.0), _inputs(t=100.0)
        mixed = {**hi, "hidden_states": torch.cat([hi["hidden_states"], lo["hidden_states"]])}
        mixed.update(
            timestep=torch.tensor([950.0, 100.0]),
            encoder_hidden_states=hi["encoder_hidden_states"].repeat(2, 1, 1),
        )
        out = model(**mixed)[0]
        torch.testing.assert_close(out[:1], model.transformer(**hi)[0])
        lo_same = {**lo, "encoder_hidden_states": hi["encoder_hidden_states"]}
        torch.testing.assert_close(out[1:], model.transformer_2(**lo_same)[0])


@pytest.mark.parametrize(
    ("arch", "fixture"),
    [("wan2.2_i2v_a14b", "tiny_wan22_a14b_dir"), ("wan2.2_ti2v_5b", "tiny_wan22_ti2v_dir")],
)
def test_sampling_matches_the_pipeline(arch: str, fixture: str, request) -> None:
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    path = request.getfixturevalue(fixture)
    spec = _spec(path, arch)
    frames, caption = _frames(), ["a red square moving left"]
    # 4 steps at shift 5: the first timestep is >= 900 (high-noise expert), the rest below
    from test_sample import sample  # the evaluator's path: precompute entry -> sampler

    video = sample(
        spec, spec.load_transformer(), frames, caption, num_frames=9, steps=4,
        guidance_scale=1.0, seed=3,
    )  # fmt: skip
    pipe = WanImageToVideoPipeline.from_pretrained(path)
    ref = pipe(
        image=Image.fromarray(frames[0].numpy()), prompt=caption[0], height=32, width=64,
        num_frames=9, num_inference_steps=4, guidance_scale=1.0,
        generator=torch.Generator().manual_seed(3), output_type="np",
    ).frames[0]  # fmt: skip
    assert video.shape == (1, 9, 32, 64, 3)
    diff = np.abs(video[0].numpy().astype(np.float64) - ref.astype(np.float64) * 255)
    assert diff.max() <= 0.6


def test_low_noise_lora_loads_with_load_into_transformer_2(
    tiny_wan22_a14b_dir: Path, tmp_path: Path
) -> None:
    from diffusers import WanImageToVideoPipeline

    model = _spec(tiny_wan22_a14b_dir, "wan2.2_i2v_a14b").load_transformer()
    n = apply_finetune(model, "lora", LoraConfig(rank=4, alpha_mode="rslora", experts="low"))
    assert n > 0 and not any(p.requires_grad for p in model.transformer.parameters())
    assert sigma_range_of(model) == (0.0, 0.9)
    _perturb(model)
    model.eval()
    path = save_result(model, "lora", tmp_path, {"rank": 4}, save_dtype="float32")
    assert path.name == LORA_WEIGHT_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == [COMFY_WEIGHT_NAME, LORA_WEIGHT_NAME]
    with torch.no_grad():
        ours = model(**_inputs(t=300.0))[0]
        high = model(**_inputs(t=950.0))[0]
    for weights in (tmp_path, str(tmp_path / COMFY_WEIGHT_NAME)):
        pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan22_a14b_dir)
        pipe.load_lora_weights(weights, load_into_transformer_2=True)
        assert not hasattr(pipe.transformer, "peft_config")  # the high-noise expert untouched
        with torch.no_grad():
            torch.testing.assert_close(pipe.transformer_2(**_inputs(t=300.0))[0], ours)
            torch.testing.assert_close(pipe.transformer(**_inputs(t=950.0))[0], high)


def test_both_experts_and_full_per_expert(tiny_wan22_a14b_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_wan22_a14b_dir, "wan2.2_i2v_a14b")
    both = spec.load_transformer()
    n_both = apply_finetune(both, "lora", LoraConfig(rank=4, experts="both"))
    one = spec.load_transformer()
    assert n_both == 2 * apply_finetune(one, "lora", LoraConfig(rank=4, experts="high"))
    assert sigma_range_of(one) == (0.9, 1.0) and sigma_range_of(both) == (0.0, 1.0)
    _perturb(both)
    save_result(both, "lora", tmp_path / "lora", None)
    names = sorted(p.name for p in (tmp_path / "lora").iterdir())
    assert names == [
        COMFY_WEIGHT_NAME, "lora_comfyui_low_noise.safetensors",
        LORA_WEIGHT_NAME, "pytorch_lora_weights_low_noise.safetensors",
    ]  # fmt: skip
    full = spec.load_transformer()
    total = sum(p.numel() for p in full.transformer_2.parameters())
    assert apply_finetune(full, "full", LoraConfig(experts="low")) == total
    out = save_result(full, "full", tmp_path / "model", None)
    assert out.name == "transformer_2" and (out / "config.json").is_file()
    assert not (tmp_path / "model" / "transformer").exists()
    with pytest.raises(ModelError, match="lora.experts=low needs a two-expert model"):
        apply_finetune(torch.nn.Linear(2, 2), "lora", LoraConfig(experts="low"))


def test_training_sigmas_stay_in_the_trained_experts_range() -> None:
    from rank_sweep.train.steps import micro_batch_loss

    model = WanExperts(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), 0.9)
    seen: list[torch.Tensor] = []

    def forward(m, batch, noisy, t):
        seen.append(t)
        return noisy * 0

    cfg = SimpleNamespace(timestep_sampling="uniform", logit_mean=0.0, logit_std=1.0)
    batch = {"latents": torch.zeros(1, 4, 2, 2, 2)}
    for name, lo, hi in (("high", 900, 1000), ("low", 0, 900)):
        model.train_sigma_range = (lo / 1000, hi / 1000)
        seen.clear()
        for k in range(64):
            micro_batch_loss(model, batch, forward, cfg, 5.0, [k], None)
        t = torch.cat(seen)
        assert lo < t.min() and t.max() < hi, name
    s = torch.tensor([0.0, 0.5, 1.0])
    assert restrict_sigmas(s, 0.9, 1.0).tolist() == pytest.approx([0.9, 0.95, 1.0])


def test_ti2v_first_frame_is_given_not_learned(tiny_wan22_ti2v_dir: Path) -> None:
    spec = _spec(tiny_wan22_ti2v_dir, "wan2.2_ti2v_5b")
    assert spec.latent_channels == 48 and spec.vae_scale == (4, 16)
    first = _frames().permute(0, 3, 1, 2).float() / 127.5 - 1
    cond = spec.i2v_condition(first, 9)
    assert cond.shape == (1, 48, 1, 2, 4)
    model = spec.load_transformer()
    x0 = torch.randn(1, 48, 3, 2, 4)
    noise = torch.randn_like(x0)
    sigma = torch.tensor([0.7])
    noisy = (1 - sigma) * x0 + sigma * noise
    batch = {"latents": x0, "cond": cond, "text_emb": torch.randn(1, 512, 32)}
    batch["image_emb"] = spec.encode_images(_frames())
    assert batch["image_emb"].shape == (1, 0, 1)
    pred = forward_batch(model, batch, noisy, sigma * 1000)
    torch.testing.assert_close(pred[:, :, :1], (noise - x0)[:, :, :1], atol=1e-5, rtol=1e-5)
    pred[:, :, 1:].sum().backward()
    assert any(p.grad is not None for p in model.parameters())


def test_tiny_presets_through_the_config(compose) -> None:
    from rank_sweep.config.validate import ConfigError, validate

    cfg = compose(["model=tiny_wan22_a14b", "lora.experts=low"])
    validate(cfg)
    assert cfg.model.arch == "wan2.2_i2v_a14b" and cfg.model.flow_shift == 5.0
    with pytest.raises(ConfigError, match="lora.experts='middle'"):
        validate(compose(["model=tiny_wan22_a14b", "lora.experts=middle"]))
    with pytest.raises(ConfigError, match="data.height=48 .* multiple of 32"):
        validate(compose(["model=tiny_wan22_ti2v", "data.height=48"]))


@pytest.mark.parametrize(
    "name", ["demo_wan22", "wan22_a14b_ucf101_rank_sweep", "wan22_ti2v_ucf101_rank_sweep"]
)
def test_wan22_experiments_compose_and_validate(compose, name: str) -> None:
    from rank_sweep.config.validate import validate

    cfg = compose([f"+experiment={name}"])
    validate(cfg)
    assert cfg.model.arch.startswith("wan2.2")
    if name.startswith("wan22_ti2v"):
        assert (cfg.data.frames, cfg.data.height, cfg.data.width) == (121, 704, 1280)


def test_full_finetune_of_each_expert_is_its_own_job(compose) -> None:
    from rank_sweep.job.identity import fingerprint

    base = ["model=tiny_wan22_a14b", "finetune=full"]
    prints = {e: fingerprint(compose([*base, f"lora.experts={e}"])) for e in ("high", "low")}
    assert prints["high"] != prints["low"]
    # for full fine-tuning the LoRA shape is irrelevant: still one job per expert choice
    assert fingerprint(compose([*base, "lora.experts=low", "lora.rank=64"])) == prints["low"]


def test_two_expert_training_resumes_bitwise(compose, tiny_wan22_a14b_dir: Path, tmp_path) -> None:
    """Kill after the step-2 checkpoint, rerun: same expert weights as an uninterrupted run."""
    from rank_sweep.model.adapters import trainable_state_dict
    from rank_sweep.train.loop import TrainHooks, train

    cfg = compose(["model=tiny_wan22_a14b", "train.steps=4", "train.checkpoint_every=2"]).train
    g = torch.Generator().manual_seed(0)
    items = [
        {
            "latents": torch.randn(16, 3, 4, 4, generator=g),
            "cond": torch.randn(20, 3, 4, 4, generator=g),
            "text_emb": torch.randn(512, 32, generator=g),
            "image_emb": torch.zeros(0, 1),
        }
        for _ in range(3)
    ]
    spec = _spec(tiny_wan22_a14b_dir, "wan2.2_i2v_a14b")

    def run(state: Path, hooks: TrainHooks | None = None):
        torch.manual_seed(0)
        model = spec.load_transformer()
        apply_finetune(model, "lora", LoraConfig(rank=4, experts="both"))
        train(model, items, cfg, lr=1e-3, state_dir=state, forward_fn=forward_batch,
              shift=5.0, hooks=hooks)  # fmt: skip
        return trainable_state_dict(model)

    ref = run(tmp_path / "ref")

    def die(metrics: dict, step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt  # a kill after the step-2 checkpoint

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "state", TrainHooks(on_log=die))
    got = run(tmp_path / "state")
    assert ref.keys() == got.keys() and any(k.startswith("transformer_2.") for k in ref)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
