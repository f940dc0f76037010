"""LPIPS / CLIP-SIM detectors and the per-clip metrics with paired intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rank_sweep.eval import extra_metrics as em
from rank_sweep.eval.detectors import lpips as lp


def test_lpips_state_dict_keys_match_published_layouts():
    alex = lp.LPIPS("alex")
    keys = set(alex.backbone.state_dict())
    # torchvision AlexNet conv indices in `features`
    assert {f"features.{i}.weight" for i in (0, 3, 6, 8, 10)} <= keys
    assert alex.heads.state_dict()["lin0.model.1.weight"].shape == (1, 64, 1, 1)
    assert alex.heads.state_dict()["lin4.model.1.weight"].shape == (1, 256, 1, 1)
    vgg = lp.LPIPS("vgg")
    vkeys = set(vgg.backbone.state_dict())
    assert "features.28.weight" in vkeys and "features.30.weight" not in vkeys
    assert vgg.heads.state_dict()["lin3.model.1.weight"].shape == (1, 512, 1, 1)


def test_lpips_loads_published_format_and_rejects_foreign(tmp_path):
    src = lp.write_random(tmp_path / "rnd", "alex", seed=3)
    pub = tmp_path / "pub"
    pub.mkdir()
    # A torchvision-style file carries the classifier too: ignored, features load strictly.
    sd = torch.load(next(src.glob("alexnet*.pth")), weights_only=True)
    sd["classifier.1.weight"] = torch.zeros(4096, 9216)
    torch.save(sd, pub / "alexnet-owt-7be5be79.pth")
    torch.save(torch.load(src / "alex.pth", weights_only=True), pub / "alex.pth")
    det = lp.load_lpips(str(pub), "alex")
    assert det.pretrained is True  # no random marker: a published pair
    rnd = lp.load_lpips(str(src), "alex")
    assert rnd.pretrained is False and rnd.sha256 != det.sha256  # classifier bytes differ
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad / "alexnet.pth")
    torch.save(torch.load(src / "alex.pth", weights_only=True), bad / "alex.pth")
    with pytest.raises(lp.LpipsError, match="layout"):
        lp.load_lpips(str(bad), "alex")
    with pytest.raises(lp.LpipsError, match="must hold"):
        lp.load_lpips(str(tmp_path), "alex")


def test_lpips_distance_properties():
    det = lp.load_lpips(None, "alex")
    assert det.pretrained is False
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 32, 32, 3), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 32, 32, 3), generator=g, dtype=torch.uint8)
    near = (a.int() + 3).clamp(0, 255).to(torch.uint8)
    assert torch.allclose(det.distance(a, a), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    dab, dba = det.distance(a, b), det.distance(b, a)
    assert torch.allclose(dab, dba) and (dab > 0).all()
    assert (det.distance(a, near) < dab).all()  # a small change is closer than a new image


def test_clip_encoders_tiny(tiny_wan_dir):
    from rank_sweep.eval.detectors.clip import load_clip_text_image, load_wan_image_encoder

    img = load_wan_image_encoder(tiny_wan_dir, pretrained=False)
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    e = img.embed(frames)
    assert e.shape[0] == 4 and np.allclose(np.linalg.norm(e, axis=1), 1.0)
    assert np.allclose(img.embed(frames[:1]), e[:1])
    txt = load_clip_text_image(None)
    assert txt.pretrained is False
    t = txt.embed_text(["a red ball moving left", "blue stripes"])
    i = txt.embed_images(frames)
    assert t.shape == (2, i.shape[1]) and np.allclose(np.linalg.norm(t, axis=1), 1.0)
    assert not np.allclose(t[0], t[1])


def test_clipsim_pure_forms():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    still = np.repeat(v[:, None], 5, axis=1)  # a frozen clip
    assert np.allclose(em.clipsim_temporal(still), 1.0)
    assert np.allclose(em.clipsim_img(still, v), 1.0)
    assert np.allclose(em.clipsim_text(still, -v), -1.0)
    moving = still.copy()
    moving[:, 2:] = -moving[:, 2:]
    assert np.allclose(em.clipsim_temporal(moving), (1 + -1 + 1 + 1) / 4)


def test_intervals_contain_point_and_pair():
    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.1, 40)
    b = a + 0.01 + rng.normal(0, 0.001, 40)  # b is a shifted copy of a, clip by clip
    for x in (a, b):
        point, lo, hi = em.mean_interval(x, 200, seed=0)
        assert lo <= point <= hi
    d, lo, hi = em.paired_interval(b, a, 200, seed=0)
    assert 0 < lo <= d <= hi < 0.02  # pairing removes the clip-to-clip spread
    _, ulo, uhi = em.mean_interval(a, 200, 0)
    assert (hi - lo) < (uhi - ulo) / 10
    assert np.isnan(em.mean_interval(a[:1], 200, 0)[1])


def test_extra_metrics_score_against_real_clips(tiny_wan_dir):
    """Generated == real gives LPIPS 0 on every clip; a frozen clip gives CLIP-SIM img and
    temporal 1; values come per clip, in clip order, with intervals around the mean."""
    rng = np.random.default_rng(3)
    clips = rng.integers(0, 256, (3, 5, 32, 32, 3), dtype=np.uint8)
    clips[1] = clips[1, :1]  # clip 1 is a still: every frame equals its first frame
    eval_set = [
        {"video": torch.from_numpy(c), "first_frame": torch.from_numpy(c[0]), "caption": cap}
        for c, cap in zip(clips, ["a red ball", "blue stripes moving left", "noise"])
    ]
    ex = em.ExtraMetrics(list(em.EXTRA_METRICS), "ds", tiny_wan_dir, False, bootstrap=50)
    ex.prepare(eval_set, 3)
    same = ex.score(clips)
    assert same.per_clip["lpips"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert same.per_clip["clipsim_img"][1] == pytest.approx(1.0)
    assert same.per_clip["clipsim_temporal"][1] == pytest.approx(1.0)
    m = same.metrics
    assert m["clipsim_text/ds"] == pytest.approx(np.mean(same.per_clip["clipsim_text"]))
    assert m["clipsim_img_ci_lo/ds"] <= m["clipsim_img/ds"] <= m["clipsim_img_ci_hi/ds"]
    other = ex.score(clips[:, ::-1].copy())  # time-reversed: frames 1.. differ from real
    assert all(v > 0 for i, v in enumerate(other.per_clip["lpips"]) if i != 1)
    assert other.stamp["extra.lpips.pretrained"] == "false" and ex.pretrained is False
