"""The embedded world: fingerprint, domains, the built parts loaded by the real loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def test_fingerprint_is_stable_and_names_preset_and_seed():
    from rank_sweep.world import world_fingerprint

    a = world_fingerprint("demo", 0)
    assert a == world_fingerprint("demo", 0) and len(a) == 16
    assert a != world_fingerprint("demo", 1)
    assert a != world_fingerprint("smoke", 0)
    with pytest.raises(ValueError, match="model.world"):
        world_fingerprint("nope", 0)


def test_domains_differ_in_classes_and_look():
    from rank_sweep.data.render import (
        BASE_CLASSES,
        TARGET_CLASSES,
        class_name,
        domain_class,
        render_domain,
    )

    assert not set(BASE_CLASSES) & set(TARGET_CLASSES)
    assert [class_name(domain_class("target", c)) for c in range(2)] == [
        "FlickeringBlocks",
        "RotatingBar",
    ]
    assert domain_class("all", 5) == 5
    with pytest.raises(ValueError, match="domain"):
        domain_class("other", 0)
    a = render_domain("target", 0, np.random.default_rng(0), 4, 16, 16)
    b = render_domain("target", 0, np.random.default_rng(0), 4, 16, 16)
    assert a.dtype == np.uint8 and a.shape == (4, 16, 16, 3) and np.array_equal(a, b)
    # the film look: warm tint, red channel >= blue everywhere
    assert (a[..., 0].astype(int) >= a[..., 2].astype(int)).all()


def test_synthetic_writer_uses_the_domain(tmp_path):
    from rank_sweep.config.schema import SynthConfig
    from rank_sweep.data.errors import DataError
    from rank_sweep.data.synth import write_synthetic

    spec = SynthConfig(
        classes=2, videos_per_class=3, frames=9, height=16, width=16, domain="target"
    )
    root = write_synthetic("ucf101", tmp_path / "t", spec)
    names = (root / "ucfTrainTestlist" / "classInd.txt").read_text().split()
    assert names == ["1", "FlickeringBlocks", "2", "RotatingBar"]
    with pytest.raises(DataError, match="synth.domain"):
        write_synthetic("ucf101", tmp_path / "x", SynthConfig(domain="nope"))


def test_pools_are_deterministic_and_disjoint_from_heldout():
    from rank_sweep.world.pools import render_pool

    a = render_pool("base", 2, 2, 9, 16, 16, seed=0)
    b = render_pool("base", 2, 2, 9, 16, 16, seed=0)
    c = render_pool("base", 2, 2, 9, 16, 16, seed=0, split=1)
    assert np.array_equal(a.videos, b.videos) and list(a.labels) == [0, 0, 1, 1]
    assert not np.array_equal(a.videos, c.videos)
    assert a.captions[0] == "a video of moving square"


def test_smoke_world_parts_load_through_the_real_paths(smoke_world):
    from rank_sweep.eval.detectors.loaders import load_frame_detector, load_video_detector
    from rank_sweep.eval.scoring import detector_weights
    from rank_sweep.model.layout import missing_parts
    from rank_sweep.model.spec import WanSpec
    from rank_sweep.track import contract as C
    from rank_sweep.world.detector import DETECTOR_NAME
    from rank_sweep.world.frame_detector import FRAME_DETECTOR_NAME

    info = smoke_world.info()
    assert info["fingerprint"] == smoke_world.fingerprint
    assert {"vae_psnr_db/target", "recon_fvd/target", "detector_acc/heldout"} <= set(
        info["metrics"]
    )
    assert not missing_parts(smoke_world.model_dir)
    vae_cfg = json.loads((smoke_world.model_dir / "vae" / "config.json").read_text())
    assert vae_cfg["base_dim"] == 8  # the world's VAE, not the random 4-wide one
    assert vae_cfg["latents_mean"] != [0.0] * 16 or vae_cfg["latents_std"] != [1.0] * 16
    spec = WanSpec(smoke_world.model_dir, torch.device("cpu"), torch.float32, 3.0)
    assert spec.load_transformer().config.in_channels == 36

    det = load_video_detector(str(smoke_world.detector_path), size=224)
    assert det.name == DETECTOR_NAME and det.pretrained is False and det.size == 32
    assert detector_weights(det) == C.WEIGHTS_PROJECT and not det.random_weights  # trained
    rng = np.random.default_rng(0)
    moving = rng.integers(0, 255, (2, 16, 32, 32, 3), dtype=np.uint8)
    static = np.repeat(moving[:, :1], 16, axis=1)
    f_moving, f_static = det.features(moving), det.features(static)
    assert f_moving.shape == (2, det.feature_dim) and f_moving.dtype == np.float64
    assert not np.allclose(f_moving, f_static)

    # the frame detector (KID): FID Inception's call signature, per-frame features
    frame = load_frame_detector(str(smoke_world.frame_detector_path), size=299)
    assert frame.name == FRAME_DETECTOR_NAME and frame.kind == "frame" and frame.size == 32
    assert not frame.pretrained and detector_weights(frame) == C.WEIGHTS_PROJECT
    f_frames = frame.features(moving)
    assert f_frames.shape == (2, 16, frame.feature_dim) and frame.feature_dim == 64
    assert not np.allclose(f_frames[:, 0], f_frames[:, 1])  # another frame, other features
    assert "frame_detector_acc/heldout" in info["metrics"]


def test_composed_config_uses_the_world(compose, smoke_world):
    from rank_sweep.model.spec import resolve_model_path
    from rank_sweep.world import resolve_detector_path

    cfg = compose([])
    assert cfg.model.world == "smoke" and cfg.eval.i3d_path == "world"
    assert resolve_model_path(cfg.model) == smoke_world.model_dir
    assert resolve_detector_path("world", cfg.model) == str(smoke_world.detector_path)
    assert resolve_detector_path("/x/i3d.pt", cfg.model) == "/x/i3d.pt"
    random_cfg = compose(["model.world=null"])
    assert resolve_detector_path("world", random_cfg.model) is None  # random-init I3D
    assert cfg.eval.inception_path == "world"
    frame = resolve_detector_path("world", cfg.model, "frame")
    assert frame == str(smoke_world.frame_detector_path)
    assert resolve_detector_path("world", random_cfg.model, "frame") is None  # random Inception


def test_demo_experiment_states_a_fair_alpha_policy(compose):
    cfg = compose(["+experiment=demo"])
    assert cfg.lora.alpha_mode == "ratio"
    # the world comes from conf/model (demo; the suite's RANK_SWEEP_WORLD=smoke)
    assert cfg.model.world == "smoke" and cfg.data.synth.domain == "target"
    assert cfg.eval.i3d_path == "world"


def test_make_tiny_leaves_the_global_rng_alone(tmp_path):
    from rank_sweep.model.tiny import make_tiny

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny(tmp_path / "m", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_world_stamp_names_the_world(compose):
    from rank_sweep.world import world_fingerprint, world_stamp

    cfg = compose([])
    assert world_stamp(cfg.model) == {
        "world.preset": "smoke",
        "world.fingerprint": world_fingerprint("smoke", 0),
    }
    assert world_stamp(compose(["model.world=null"]).model) == {}


def test_build_does_not_depend_on_the_ambient_thread_count(tmp_path, smoke_world):
    """CPU reductions depend on the thread count; the build fixes it (recipe.threads), so a
    busy machine (1 free core) builds the same weights as a quiet one."""
    from rank_sweep.world.build import build_world

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before > 1 else 2)  # not what the fixture's build had
        build_world(tmp_path / "one", "smoke", 0)
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before  # restored
    for part in ("vae", "transformer"):
        name = "diffusion_pytorch_model.safetensors"
        a = (tmp_path / "one" / "model" / part / name).read_bytes()
        b = (smoke_world.model_dir / part / name).read_bytes()
        assert a == b, part
    for det in ("detector.pt", "frame_detector.pt"):  # weights, not archive bytes (code names)
        a = torch.jit.load(str(tmp_path / "one" / det)).state_dict()
        b = torch.jit.load(str(smoke_world.root / det)).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), det
