"""Tiny Wan I2V on disk: loading, validation errors, and the pipeline's conditioning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rank_sweep.config.schema import ModelConfig
from rank_sweep.model.spec import ModelError, WanSpec, resolve_model_path


def _cfg(path, seed: int = 0) -> ModelConfig:
    return ModelConfig(path=None if path is None else str(path), tiny_seed=seed)


@pytest.fixture(scope="module")
def spec(make_spec) -> WanSpec:
    return make_spec()


def test_pipeline_from_pretrained_loads_every_part(tiny_wan_dir: Path) -> None:
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_dir)
    cfg = pipe.transformer.config
    assert (cfg.in_channels, cfg.out_channels, cfg.num_layers) == (36, 16, 2)
    assert cfg.image_dim == pipe.image_encoder.config.hidden_size
    assert cfg.added_kv_proj_dim == cfg.num_attention_heads * cfg.attention_head_dim
    assert cfg.text_dim == pipe.text_encoder.config.d_model
    assert pipe.vae.config.z_dim == 16 and len(pipe.vae.config.latents_mean) == 16
    assert pipe.scheduler.config.prediction_type == "flow_prediction"
    assert pipe.scheduler.config.use_flow_sigmas and pipe.scheduler.config.flow_shift == 3.0
    size = sum(f.stat().st_size for f in tiny_wan_dir.rglob("*") if f.is_file())
    assert size < 5e6


def test_make_tiny_is_seeded(tiny_wan_dir: Path, tmp_path: Path) -> None:
    from rank_sweep.model.tiny import make_tiny

    make_tiny(tmp_path / "again", seed=0)
    make_tiny(tmp_path / "other", seed=1)
    ref = (tiny_wan_dir / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert (tmp_path / "again/transformer/diffusion_pytorch_model.safetensors").read_bytes() == ref
    assert (tmp_path / "other/transformer/diffusion_pytorch_model.safetensors").read_bytes() != ref


def test_incomplete_dir_error_lists_what_is_missing(tiny_wan_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_wan_dir, broken)
    (broken / "model_index.json").unlink()
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(ModelError) as e:
        resolve_model_path(_cfg(broken))
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("model_index.json", "vae/<weights", "scheduler/scheduler_config.json"):
        assert part in msg
    assert "transformer" not in msg
    with pytest.raises(ModelError, match="no such directory"):
        resolve_model_path(_cfg(tmp_path / "nowhere"))


def test_null_path_writes_tiny_once_into_cache(isolated_cache: Path) -> None:
    path = resolve_model_path(_cfg(None, seed=3))
    assert path == isolated_cache / "models" / "tiny_wan-s3"
    stamp = (path / "transformer" / "config.json").stat().st_mtime_ns
    assert resolve_model_path(_cfg(None, seed=3)) == path
    assert (path / "transformer" / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_text_embeddings_padded_to_512_with_zeros(spec: WanSpec) -> None:
    emb = spec.encode_prompts(["a red square moving left", "blue circle"])
    assert emb.shape == (
        2,
        512,
        json.loads((spec.path / "text_encoder/config.json").read_text())["d_model"],
    )
    # tokens: 5 words + eos and 2 words + eos; everything after is exactly zero
    assert emb[0, :6].abs().sum(-1).gt(0).all() and emb[0, 6:].abs().max() == 0
    assert emb[1, :3].abs().sum(-1).gt(0).all() and emb[1, 3:].abs().max() == 0


def test_image_embeddings_match_pipeline(spec: WanSpec, tiny_wan_dir: Path) -> None:
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    frames = torch.randint(
        0, 256, (2, 32, 48, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    emb = spec.encode_images(frames)
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_dir)
    ref = pipe.encode_image([Image.fromarray(f.numpy()) for f in frames], torch.device("cpu"))
    torch.testing.assert_close(emb, ref)


def test_i2v_condition_shapes_and_mask(spec: WanSpec) -> None:
    first = torch.rand(2, 3, 32, 48) * 2 - 1
    cond = spec.i2v_condition(first, num_frames=9)
    assert cond.shape == (2, 20, 3, 4, 6)
    mask = cond[:, :4]
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all()
    # the first-frame latent equals the latent of the frame followed by black frames
    video = torch.cat([first.unsqueeze(2), torch.zeros(2, 3, 8, 32, 48)], dim=2)
    torch.testing.assert_close(cond[:, 4:], spec.encode_video(video))
    with pytest.raises(ModelError, match="4k\\+1"):
        spec.i2v_condition(first, num_frames=8)


def test_encode_decode_shapes(spec: WanSpec) -> None:
    assert spec.vae_scale == (4, 8) and spec.shift == 3.0
    lat = spec.encode_video(torch.rand(1, 3, 9, 32, 32) * 2 - 1)
    assert lat.shape == (1, 16, 3, 4, 4)
    pix = spec.decode_latents(lat)
    assert pix.shape == (1, 3, 9, 32, 32) and pix.min() >= -1 and pix.max() <= 1


def test_free_encoders_keeps_vae(spec: WanSpec) -> None:
    spec.load_encoders()
    spec.free_encoders()
    assert set(spec._parts) == {"vae"}
    assert spec.encode_prompts(["a"]).shape[1] == 512  # reloads on demand


def test_predict_returns_flow_shaped_output(spec: WanSpec) -> None:
    tr = spec.load_transformer()
    cond = spec.i2v_condition(torch.zeros(1, 3, 32, 32), 5)
    noisy = torch.randn(1, 16, *cond.shape[2:])
    out = spec.predict(
        tr,
        noisy,
        torch.tensor([500.0]),
        cond,
        spec.encode_prompts(["x"]),
        spec.encode_images(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)),
    )
    assert out.shape == noisy.shape and torch.isfinite(out).all()
