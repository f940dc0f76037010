"""Precompute cache: content keys, reuse without recomputation, corrupt entries recomputed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from rank_sweep.model.precompute import PrecomputedSet, cache_key, entry_path, precompute
from rank_sweep.model.spec import WanSpec


class CountingSpec(WanSpec):
    """The real spec, counting text-encoder calls."""

    prompt_calls = 0

    def encode_prompts(self, prompts):
        self.prompt_calls += len(prompts)
        return super().encode_prompts(prompts)


@pytest.fixture(scope="module")
def dataset(synth_ucf101: Path):
    from rank_sweep.config.schema import DataConfig
    from rank_sweep.data.dataset import build_dataset

    cfg = DataConfig(root=str(synth_ucf101), layout="ucf101")
    return build_dataset(cfg, "train", train=False, frames=5, height=32, width=32, max_clips=4)


def test_cache_key_tracks_content_not_location(tiny_wan_dir: Path, tmp_path: Path) -> None:
    from rank_sweep.model.tiny import make_tiny

    copy = tmp_path / "copy"
    shutil.copytree(tiny_wan_dir, copy)
    key = cache_key(tiny_wan_dir, "data1", 9, 32, 32)
    assert cache_key(copy, "data1", 9, 32, 32) == key
    assert cache_key(tiny_wan_dir, "data2", 9, 32, 32) != key
    assert cache_key(tiny_wan_dir, "data1", 13, 32, 32) != key
    assert cache_key(tiny_wan_dir, "data1", 9, 32, 48) != key
    assert cache_key(make_tiny(tmp_path / "s1", seed=1), "data1", 9, 32, 32) != key


def test_precompute_reuses_and_recomputes_corrupt_entries(
    make_spec, tiny_wan_dir: Path, dataset, tmp_path: Path, caplog
) -> None:
    spec = make_spec(cls=CountingSpec)
    out = tmp_path / cache_key(tiny_wan_dir, dataset.fingerprint(), 5, 32, 32)
    first = precompute(spec, dataset, out)
    assert isinstance(first, PrecomputedSet) and first.computed == len(dataset) == len(first)
    captions = {dataset[i]["caption"] for i in range(len(dataset))}
    assert spec.prompt_calls == len(captions) < len(dataset)

    item = first[1]
    assert item["latents"].shape == (16, 2, 4, 4)
    assert item["cond"].shape == (20, 2, 4, 4)
    assert item["text_emb"].shape == (512, 32)
    assert item["image_emb"].shape == (17, 32)
    assert item["index"] == dataset[1]["index"]
    src = dataset[1]
    torch.testing.assert_close(item["latents"], spec.encode_video(src["pixels"].unsqueeze(0))[0])

    again = precompute(spec, dataset, out)
    assert again.computed == 0 and spec.prompt_calls == len(captions)

    victim = entry_path(out, 2)
    before = {
        k: v.clone() for k, v in first[2].items() if torch.is_tensor(v)
    }  # entries are mmapped
    victim.write_bytes(victim.read_bytes()[:100])  # truncated, as after a crash mid-copy
    with caplog.at_level("WARNING"):
        fixed = precompute(spec, dataset, out)
    assert fixed.computed == 1 and "unreadable" in caplog.text
    for k in ("latents", "cond", "text_emb", "image_emb"):
        torch.testing.assert_close(fixed[2][k], before[k])
    assert not list(out.glob(".*"))
