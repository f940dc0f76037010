"""Detector loaders: published file formats in, the same features out; clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rank_sweep.eval.detectors.loaders import (
    DetectorError,
    build_random,
    load_frame_detector,
    load_video_detector,
    save_torchscript,
)
from rank_sweep.eval.metrics import fvd_from_features

I3D_SIZE = 32  # smallest input every I3D pool accepts; protocol is 224
INC_SIZE = 75  # smallest InceptionV3 input


@pytest.fixture(scope="module")
def i3d_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    d = tmp_path_factory.mktemp("i3d")
    module = build_random("i3d", I3D_SIZE, seed=1)
    save_torchscript(module, d / "i3d_torchscript.pt")
    torch.save(module.net.state_dict(), d / "i3d_pretrained_400.pt")
    return module, d / "i3d_torchscript.pt", d / "i3d_pretrained_400.pt"


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    d = tmp_path_factory.mktemp("inception")
    module = build_random("inception", INC_SIZE, seed=1)
    save_torchscript(module, d / "inception-2015-12-05.pt")
    torch.save(module.net.state_dict(), d / "pt_inception.pth")
    return module, d / "inception-2015-12-05.pt", d / "pt_inception.pth"


def _videos(n: int, t: int = 16, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, h, w, 3), dtype=np.uint8)


def test_i3d_state_dict_has_pytorch_i3d_layout(i3d_files) -> None:
    sd = torch.load(i3d_files[2], weights_only=True)
    for key in (
        "Conv3d_1a_7x7.conv3d.weight",
        "Conv3d_1a_7x7.bn.running_var",
        "Conv3d_2c_3x3.conv3d.weight",
        "Mixed_3b.b1b.conv3d.weight",
        "Mixed_5c.b3b.bn.bias",
        "logits.conv3d.bias",
    ):
        assert key in sd, key
    assert tuple(sd["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert tuple(sd["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert not any(k.startswith("logits.bn") for k in sd)


@pytest.mark.parametrize("which", ["torchscript", "state_dict"])
def test_i3d_loader_reproduces_saved_module(i3d_files, which: str) -> None:
    module, ts, sd = i3d_files
    det = load_video_detector(
        str(ts if which == "torchscript" else sd), size=I3D_SIZE, trust_torchscript=True
    )
    assert (det.name, det.kind, det.feature_dim, det.size) == ("i3d", "video", 400, I3D_SIZE)
    assert det.pretrained is (which == "state_dict")  # the scripted file says random_init
    videos = _videos(2)
    with torch.no_grad():
        ref = module(
            torch.from_numpy(videos).permute(0, 4, 1, 2, 3),
            rescale=True,
            resize=True,
            return_features=True,
        )
        pooled = module.pooled(torch.from_numpy(videos).permute(0, 4, 1, 2, 3))
    got = det.features(videos)
    assert got.dtype == np.float64 and got.shape == (2, 400)
    # float32 through ~60 layers: TorchScript and eager kernels may round differently
    np.testing.assert_allclose(got, ref.double().numpy(), rtol=1e-4, atol=1e-4)
    assert pooled.shape == (2, 1024)
    assert not np.allclose(got[0], got[1])  # different inputs, different features


def test_inception_state_dict_has_fid_layout(inception_files) -> None:
    sd = torch.load(inception_files[2], weights_only=True)
    for key in (
        "Conv2d_1a_3x3.conv.weight",
        "Conv2d_4a_3x3.bn.running_mean",
        "Mixed_5b.branch5x5_2.conv.weight",
        "Mixed_6e.branch7x7dbl_5.conv.weight",
        "Mixed_7c.branch3x3dbl_3b.bn.weight",
        "fc.weight",
    ):
        assert key in sd, key
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in sd)


@pytest.mark.parametrize("which", ["torchscript", "state_dict"])
def test_inception_loader_reproduces_saved_module(inception_files, which: str) -> None:
    module, ts, sd = inception_files
    det = load_frame_detector(
        str(ts if which == "torchscript" else sd), size=INC_SIZE, trust_torchscript=True
    )
    assert (det.name, det.kind, det.feature_dim) == ("inception", "frame", 2048)
    videos = _videos(2, t=3, h=60, w=80, seed=1)
    frames = torch.from_numpy(videos).reshape(6, 60, 80, 3).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref = module(frames, return_features=True).double().numpy().reshape(2, 3, 2048)
    got = det.features(videos)
    assert got.shape == (2, 3, 2048)  # per-frame features, clip axis kept
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_random_init_written_once_and_stamped() -> None:
    a = load_video_detector(None, size=I3D_SIZE)
    mtime = a.path.stat().st_mtime_ns
    b = load_video_detector(None, size=I3D_SIZE)
    assert a.pretrained is False and b.pretrained is False
    assert a.path == b.path and f"s{I3D_SIZE}" in a.path.name and a.path.suffix == ".pt"
    assert b.path.stat().st_mtime_ns == mtime and a.sha256 == b.sha256 and len(a.sha256) == 64


def test_inception_small_size_raised_to_minimum() -> None:
    det = load_frame_detector(None, size=64)
    assert det.size == INC_SIZE and "s75" in det.path.name and det.pretrained is False


def test_loader_errors(tmp_path: Path, i3d_files, inception_files) -> None:
    with pytest.raises(DetectorError, match="not found"):
        load_video_detector(str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_text("not weights\n")
    with pytest.raises(DetectorError, match="neither a TorchScript archive nor a torch state dict"):
        load_frame_detector(str(junk))
    sd = torch.load(i3d_files[2], weights_only=True)
    sd["Mixed_4b.b0.conv3d.weight"] = torch.zeros(7, 480, 1, 1, 1)
    torch.save(sd, tmp_path / "bad_shapes.pt")
    with pytest.raises(DetectorError, match=r"wrong shapes \(e.g. Mixed_4b.b0.conv3d.weight"):
        load_video_detector(str(tmp_path / "bad_shapes.pt"), size=I3D_SIZE)
    with pytest.raises(DetectorError, match="missing keys"):
        load_frame_detector(str(i3d_files[2]))  # an I3D state dict is no Inception
    with pytest.raises(DetectorError, match="cannot be called with the published signature"):
        load_video_detector(str(inception_files[1]), size=I3D_SIZE, trust_torchscript=True)


def _moving_blobs(n: int, seed: int, t: int = 16, size: int = 32) -> np.ndarray:
    """A bright blob moving right at ~2 px/frame over a dim noisy background, with small
    per-clip variations of start, speed, radius and colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    clips = np.empty((n, t, size, size, 3), dtype=np.uint8)
    for i in range(n):
        x0, y0 = rng.uniform(0, 6), rng.uniform(10, 22)
        v, r = rng.uniform(1.6, 2.2), rng.uniform(3.5, 5.0)
        colour = np.array([230, 200, 60]) + rng.integers(-20, 20, 3)
        for f in range(t):
            blob = np.exp(-((xx - x0 - v * f) ** 2 + (yy - y0) ** 2) / (2 * r * r))
            bg = 40 + rng.normal(0, 4, (size, size, 1))
            clips[i, f] = np.clip(bg + blob[..., None] * colour, 0, 255).astype(np.uint8)
    return clips


def test_fvd_sees_temporal_order() -> None:
    det = load_video_detector(None, size=I3D_SIZE)
    a, b = _moving_blobs(24, seed=0), _moving_blobs(24, seed=1)
    perm = np.random.default_rng(2).permutation(16)
    shuffled = a[:, perm]  # same frames, order destroyed
    fa, fb, fs = det.features(a), det.features(b), det.features(shuffled)
    same = fvd_from_features(fa, fa)
    resample = fvd_from_features(fa, fb)
    order = fvd_from_features(fa, fs)
    assert same < 1e-9 * order
    assert order > 2 * resample, (order, resample)
