"""Real-feature cache, scoring and the protocol stamp, on the synthetic UCF-101 layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rank_sweep.eval.detectors.loaders import load_frame_detector, load_video_detector
from rank_sweep.eval.metrics import KID_FRAME_RULE
from rank_sweep.eval.real_stats import real_features, real_stats_key, real_stats_path
from rank_sweep.eval.scoring import protocol_stamp, score
from rank_sweep.track import contract as C

SIZE = 32


class CountingView:
    """The eval clips cut to 16 frames, counting decodes (to see the cache at work)."""

    def __init__(self, base, frames: int = 16) -> None:
        self.base, self.frames, self.reads = base, frames, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        item = dict(self.base[i])
        item["video"] = np.asarray(item["video"])[: self.frames]
        return item


@pytest.fixture(scope="module")
def eval_set(synth_ucf101: Path):
    from rank_sweep.config.schema import DataConfig
    from rank_sweep.data import build_dataset

    cfg = DataConfig(layout="ucf101", root=str(synth_ucf101))
    return build_dataset(cfg, "test", train=False, frames=16, height=SIZE, width=SIZE)


@pytest.fixture(scope="module")
def video_det():
    return load_video_detector(None, size=SIZE)


def test_real_features_cached_and_reused(eval_set, video_det) -> None:
    n = min(4, len(eval_set))
    key = real_stats_key(
        dataset=eval_set.fingerprint(), split="test", frames=16, detector=video_det.sha256
    )
    assert key == real_stats_key(
        detector=video_det.sha256, frames=16, split="test", dataset=eval_set.fingerprint()
    )
    assert key != real_stats_key(
        dataset=eval_set.fingerprint(), split="test", frames=8, detector=video_det.sha256
    )
    view = CountingView(eval_set)
    first = real_features(view, video_det, num_clips=n, key=key, batch_size=3)
    assert first.shape == (n, 400) and first.dtype == np.float64 and view.reads == n
    assert real_stats_path(key).is_file()
    again = real_features(view, video_det, num_clips=n, key=key)
    assert view.reads == n  # nothing decoded the second time
    np.testing.assert_array_equal(again, first)
    real_stats_path(key).write_bytes(b"\x00garbage")  # corrupt cache: recomputed, same values
    fixed = real_features(view, video_det, num_clips=n, key=key)
    assert view.reads == 2 * n
    np.testing.assert_array_equal(fixed, first)
    with pytest.raises(ValueError, match="num_clips must be in"):
        real_features(view, video_det, num_clips=len(eval_set) + 1, key=key)


def test_score_and_stamp(eval_set, video_det) -> None:
    frame_det = load_frame_detector(None, size=SIZE)
    view = CountingView(eval_set)
    n = min(6, len(eval_set))
    real_clips = np.stack([view[i]["video"] for i in range(n)])
    fake_clips = real_clips[:, ::-1].copy()  # time-reversed real clips as "generated"
    real = {"video": video_det.features(real_clips), "frame": frame_det.features(real_clips[:, :4])}
    fake = {"video": video_det.features(fake_clips), "frame": frame_det.features(fake_clips[:, :4])}
    kw = dict(metrics=["fvd", "kid", "kvd"], kid_subsets=5, kid_subset_size=1000, seed=0)
    out = score(real, fake, **kw)
    assert set(out) == {"fvd", "kid", "kid_std", "kvd", "kvd_std", "kid_subset_size_used"}
    assert out["fvd"] > 0 and out["kid_subset_size_used"] == n  # reduced: one frame per clip
    same = score(real, real, **kw)
    assert same["fvd"] < 1e-9
    boot = score(real, fake, **{**kw, "metrics": ["fvd", "kid"]}, bootstrap=20)
    assert boot["fvd_ci_lo"] <= boot["fvd"] <= boot["fvd_ci_hi"]
    assert boot["kid_ci_lo"] <= boot["kid"] <= boot["kid_ci_hi"]
    assert boot["fvd"] == out["fvd"]
    with pytest.raises(ValueError, match="allowed"):
        score(real, fake, **{**kw, "metrics": ["fid"]})
    with pytest.raises(ValueError, match="needs real features of kind 'frame'"):
        score({"video": real["video"]}, fake, **{**kw, "metrics": ["kid"]})

    stamp = protocol_stamp(
        video_det, frame_det, n_real=n, n_fake=n, frames=16, resolution="32x32->32",
        dataset="synthetic", split="test", sample_steps=4, seed=0,
        kid_subset_size=int(out["kid_subset_size_used"]),
    )  # fmt: skip
    assert stamp[C.TAG_DETECTOR_PRETRAINED] == "false"
    assert stamp["detector.video.sha256"] == video_det.sha256
    assert stamp["detector.frame.size"] == "75"
    assert stamp["detector.frame.weights"] == stamp["detector.video.weights"] == C.WEIGHTS_RANDOM
    assert stamp["eval.kid_subset_size"] == str(n)
    assert stamp["eval.cov_ddof"] == "0" and stamp["eval.tier"] == "final"
    assert stamp["eval.kid_frame_rule"] == KID_FRAME_RULE
    assert all(isinstance(v, str) for v in stamp.values())
    json.dumps(stamp)


def test_cli_two_folders(tmp_path: Path, synth_folder: Path, capsys: pytest.CaptureFixture) -> None:
    from rank_sweep.data.video import VIDEO_SUFFIXES
    from rank_sweep.eval.cli import main

    videos = sorted(p for p in synth_folder.rglob("*") if p.suffix in VIDEO_SUFFIXES)
    assert len(videos) >= 6
    rc = main(
        ["--real", str(synth_folder), "--fake", str(synth_folder), "--size", str(SIZE),
         "--frame-size", "75", "--frames", "16", "--kid-subsets", "3", "--json"]
    )  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0
    assert "random-init detectors" in cap.err
    result = json.loads(cap.out.strip().splitlines()[-1])
    assert result["metrics"]["fvd"] < 1e-6  # a folder against itself
    assert result["stamp"][C.TAG_DETECTOR_PRETRAINED] == "false"
    assert result["stamp"]["eval.n_real"] == str(len(videos))
    assert not result["real_from_cache"] and result["stamp"]["eval.tier"] == "cli"
    args = ["--real", str(synth_folder), "--fake", str(synth_folder), "--size", str(SIZE),
            "--frame-size", "75", "--frames", "16", "--kid-subsets", "3", "--json"]  # fmt: skip
    assert main(args) == 0  # the second time the real side comes from the cache
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["real_from_cache"] and again["metrics"] == result["metrics"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--real", str(empty), "--fake", str(synth_folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds 0 videos" in err and err.count("\n") == 1
