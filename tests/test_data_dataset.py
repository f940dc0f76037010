"""VideoClipDataset: items, sampling determinism, decode correctness, bad-file handling."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rank_sweep.config.schema import DataConfig, SynthConfig
from rank_sweep.data import DataError, build_dataset
from rank_sweep.data.render import caption_for
from rank_sweep.data.sampling import clip_offsets, clip_span, frame_step, train_start
from rank_sweep.data.synth import MARKER, _frames, ucf_group_clip
from rank_sweep.data.video import read_frames


def ucf(root, **kw) -> DataConfig:
    return DataConfig(name="ucf101", layout="ucf101", root=str(root), **kw)


def build(root, split="train", train=True, frames=9, h=32, w=32, seed=0, **kw):
    max_clips = kw.pop("max_clips", None)
    return build_dataset(
        ucf(root, **kw),
        split,
        train=train,
        frames=frames,
        height=h,
        width=w,
        seed=seed,
        max_clips=max_clips,
    )


def test_item_contract(synth_ucf101):
    ds = build(synth_ucf101, frames=9, h=32, w=48)
    it = ds[3]
    assert it["pixels"].shape == (3, 9, 32, 48) and it["pixels"].dtype == torch.float32
    assert it["video"].shape == (9, 32, 48, 3) and it["video"].dtype == torch.uint8
    assert it["pixels"].min() >= -1 and it["pixels"].max() <= 1
    assert torch.allclose(it["pixels"], it["video"].permute(3, 0, 1, 2).float() / 127.5 - 1)
    assert torch.equal(it["first_frame"], it["video"][0])
    assert it["index"] == 3 and it["caption"] == caption_for(it["class_name"])
    assert ds.class_names[it["label"]] == it["class_name"] and it["path"].endswith(".avi")
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["pixels"].shape == (2, 3, 9, 32, 48) and len(batch["caption"]) == 2


def test_eval_clip_matches_the_written_frames(synth_ucf101):
    """Decode correctness end to end: eval clip i == the frames the writer rendered."""
    spec = SynthConfig(**json.loads((synth_ucf101 / MARKER).read_text())["spec"])
    ds = build(synth_ucf101, split="test", train=False, frames=16, h=spec.height, w=spec.width)
    for i in range(len(ds)):
        it = ds[i]
        g, c = (int(x) for x in it["path"][:-4].split("_g")[1].split("_c"))
        v = next(v for v in range(spec.videos_per_class) if ucf_group_clip(v) == (g, c))
        ref = _frames(spec, it["label"], v)[:16].astype(float)
        got = it["video"].numpy().astype(float)
        mse = ((got - ref) ** 2).mean()
        assert np.abs(got - ref).mean() < 8, it["path"]
        assert 10 * np.log10(255**2 / mse) > 28, it["path"]


def test_sampling_pure_functions():
    assert frame_step(30, 15, 1) == 2.0 and frame_step(8, None, 2) == 2.0
    assert clip_offsets(4, 1.875) == [0, 2, 4, 6] and clip_span(16, 1.0) == 16
    starts = {train_start(100, 16, seed=0, epoch=e, index=3) for e in range(20)}
    assert len(starts) > 5 and all(0 <= s <= 84 for s in starts)
    assert train_start(100, 16, 0, 1, 3) == train_start(100, 16, 0, 1, 3)
    with pytest.raises(ValueError, match="clip needs 16"):
        train_start(10, 16, 0, 0, 0)


def test_sampling_determinism(synth_ucf101):
    a, b = build(synth_ucf101, seed=5), build(synth_ucf101, seed=5)
    assert torch.equal(a[2]["video"], b[2]["video"])  # same seed, same clip
    epoch0 = [a.indices_for(i) for i in range(len(a))]
    c = build(synth_ucf101, seed=6)
    assert [c.indices_for(i) for i in range(len(c))] != epoch0  # so do seeds
    ev = build(synth_ucf101, train=False)
    first = [ev.indices_for(i) for i in range(len(ev))]
    assert all(ix == list(range(9)) for ix in first)  # and starts at frame 0


def test_fps_resampling_and_stride(synth_ucf101):
    ds = build(synth_ucf101, train=False, frames=5, fps=4.0)  # native 8 fps -> every 2nd frame
    assert ds.indices_for(0) == [0, 2, 4, 6, 8]
    ds = build(synth_ucf101, train=False, frames=5, fps=4.0, stride=2)
    assert ds.indices_for(0) == [0, 4, 8, 12, 16]
    full = read_frames(ds.clips[0][0].path, size=(32, 32))
    assert torch.equal(ds[0]["video"], torch.from_numpy(full[[0, 4, 8, 12, 16]]))
    with pytest.raises(DataError, match="too short x9"):
        build(synth_ucf101, frames=11, stride=2)  # 21 source frames > 20 written


def test_corrupt_files_are_skipped_with_reasons(synth_ucf101_corrupt):
    c = synth_ucf101_corrupt
    ds = build(c["root"])
    st = ds.stats()
    assert (st["clips"], st["unreadable"], st["missing"]) == (9, 3, 1)
    reasons = {s["path"]: s["reason"] for s in ds.skipped}
    assert reasons[str(c["bad"]["zero"])] == "zero-byte file"
    assert reasons[str(c["bad"]["truncated"])].startswith("truncated")
    assert reasons[str(c["bad"]["text"])].startswith("unreadable container")
    assert ds.missing == [str(c["absent"])]


def test_decode_failure_at_getitem_is_replaced_and_recorded(synth_ucf101, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(synth_ucf101, root)
    ds = build(root, train=False)
    ref1 = ds[1]
    ds.clips[0][0].path.write_bytes(b"garbage after the scan")
    it = ds[0]  # replaced by the next good clip, deterministically
    assert it["index"] == 0 and it["path"] == ref1["path"]
    assert torch.equal(it["video"], ref1["video"])
    assert ds.skipped[-1]["reason"].startswith("decode:") and ds.stats()["clips"] == len(ds) - 1
    small = build(root, split="test", train=False, max_clips=2)
    for entry, _ in small.clips:
        entry.path.write_bytes(b"")
    with pytest.raises(DataError, match="all 2 clips failed to decode"):
        small[0]


def test_max_clips_and_fingerprint(synth_ucf101, tmp_path):
    ds = build(synth_ucf101, max_clips=4, seed=0)
    assert len(ds) == 4 and len({e.class_name for e, _ in ds.clips}) >= 2
    assert [e.path for e, _ in build(synth_ucf101, max_clips=4, seed=0).clips] == [
        e.path for e, _ in ds.clips
    ]
    fp = build(synth_ucf101, train=False).fingerprint()
    assert fp == build(synth_ucf101, train=False).fingerprint()
    copy = tmp_path / "moved"
    shutil.copytree(synth_ucf101, copy)
    assert (
        build(copy, train=False).fingerprint() == fp
    )  # relative paths: a moved copy keeps its key
    assert build(synth_ucf101, train=False, frames=13).fingerprint() != fp
    assert build(synth_ucf101, train=False, h=48).fingerprint() != fp
    assert build(synth_ucf101, train=False, fold=2).fingerprint() != fp
    assert build(synth_ucf101, train=True).fingerprint() != fp


def test_dataloader_workers_give_the_same_items(synth_ucf101):
    ds = build(synth_ucf101, train=False)
    one = torch.cat([b["video"] for b in DataLoader(ds, batch_size=3)])
    two = torch.cat([b["video"] for b in DataLoader(ds, batch_size=3, num_workers=2)])
    assert torch.equal(one, two)
