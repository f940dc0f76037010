"""I2V sampling for evaluation, on the path the evaluator takes (precompute entry ->
conditioning -> sampler), equals WanImageToVideoPipeline for the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rank_sweep.eval.sample import conditioning_from_entry, sample_from_conditioning
from rank_sweep.model.precompute import encode_item
from rank_sweep.model.spec import WanSpec


@pytest.fixture(scope="module")
def spec(make_spec) -> WanSpec:
    return make_spec()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 32, 48, 3), dtype=torch.uint8, generator=g)


CAPTIONS = ["a video of moving square", "a video of bouncing ball"]
KW = dict(num_frames=9, steps=4, guidance_scale=3.0, seed=7)


def evaluator_conditioning(
    spec: WanSpec, frames: torch.Tensor, captions: list[str], num_frames: int, guidance: float
) -> list[dict[str, torch.Tensor]]:
    """Per clip: the precompute entry of a dataset item (a still clip of its first frame;
    the sampler only reads the conditioning) turned into sampler input, as Evaluator does."""
    neg = spec.encode_prompts([""]).cpu() if guidance > 1 else None
    out = []
    for frame, caption in zip(frames, captions):
        still = (frame.permute(2, 0, 1).float() / 127.5 - 1.0)[:, None]
        item = {
            "pixels": still.repeat(1, num_frames, 1, 1),
            "caption": caption,
            "first_frame": frame,
        }
        out.append(conditioning_from_entry(encode_item(spec, item, {}), neg))
    return out


def sample(spec, transformer, frames, captions, *, num_frames, steps, guidance_scale, seed):
    conds = evaluator_conditioning(spec, frames, captions, num_frames, guidance_scale)
    kw = dict(num_frames=num_frames, steps=steps, guidance_scale=guidance_scale)
    # Clip i is drawn with seed + i, as the evaluator does for its clips.
    return torch.cat(
        [
            sample_from_conditioning(spec, transformer, c, seed=seed + i, **kw)
            for i, c in enumerate(conds)
        ]
    )


def test_matches_diffusers_pipeline(
    spec: WanSpec, tiny_wan_dir: Path, frames: torch.Tensor
) -> None:
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    transformer = spec.load_transformer().train()
    video = sample(spec, transformer, frames, CAPTIONS, **KW)
    assert video.shape == (2, 9, 32, 48, 3) and video.dtype == torch.uint8
    assert transformer.training  # train mode restored

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_dir)
    for i in range(2):  # clip i uses seed + i, so it equals a single-clip pipeline call
        ref = pipe(
            image=Image.fromarray(frames[i].numpy()),
            prompt=CAPTIONS[i],
            negative_prompt="",
            height=32,
            width=48,
            num_frames=9,
            num_inference_steps=4,
            guidance_scale=3.0,
            generator=torch.Generator().manual_seed(7 + i),
            output_type="np",
        ).frames[0]
        diff = np.abs(video[i].numpy().astype(np.float64) - ref.astype(np.float64) * 255)
        assert diff.max() <= 0.6  # uint8 rounding plus float32 noise


def test_deterministic_and_seed_dependent(spec: WanSpec, frames: torch.Tensor) -> None:
    transformer = spec.load_transformer().eval()
    kw = dict(num_frames=5, steps=2, guidance_scale=1.0)
    a, b, c = (sample(spec, transformer, frames[:1], CAPTIONS[:1], seed=s, **kw) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not transformer.training


def test_uses_the_adapted_transformer(spec: WanSpec, frames: torch.Tensor) -> None:
    from rank_sweep.config.schema import LoraConfig
    from rank_sweep.model.adapters import apply_finetune

    base = spec.load_transformer()
    adapted = spec.load_transformer()
    apply_finetune(adapted, "lora", LoraConfig(rank=2))
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)
    kw = dict(num_frames=5, steps=2, guidance_scale=1.0, seed=0)
    assert not torch.equal(
        sample(spec, base, frames[:1], CAPTIONS[:1], **kw),
        sample(spec, adapted, frames[:1], CAPTIONS[:1], **kw),
    )


def test_guidance_needs_the_negative_prompt(spec: WanSpec, frames: torch.Tensor) -> None:
    transformer = spec.load_transformer()
    (cond,) = evaluator_conditioning(spec, frames[:1], CAPTIONS[:1], 9, guidance=1.0)
    with pytest.raises(ValueError, match="guidance"):
        sample_from_conditioning(spec, transformer, cond, **KW)
