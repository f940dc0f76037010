"""Synthetic datasets written as real video files in the official layouts.

- ucf101: mpeg4 in .avi under `<root>/<Class>/v_<Class>_gGG_cCC.avi` plus
  `ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt`. Video v of each class gets a
  group from bucket v % 4 of (1-7, 8-14, 15-21, 22-25), so with >= 3 videos per class
  every official fold (test groups 1-7 / 8-14 / 15-21) has train and test clips of
  every class.
- kinetics400: h264 .mp4 (mpeg4-in-mp4 when PyAV has no H.264 encoder, logged) under
  `<root>/<split>/<youtube_id>_<start:06d>_<end:06d>.mp4` plus
  `annotations/{train,validate,test}.csv`.
- folder: clips with same-stem .txt captions (or one metadata.csv), in .mp4/.mkv/.mov.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rank_sweep.config.schema import SynthConfig
from rank_sweep.data.errors import DataError
from rank_sweep.data.layouts import LAYOUTS
from rank_sweep.data.render import (
    DOMAINS,
    caption_for,
    class_name,
    domain_class,
    readable,
    render_domain,
)
from rank_sweep.data.video import h264_encoder, write_video
from rank_sweep.paths import cache_dir
from rank_sweep.utils.atomic import publish_dir
from rank_sweep.utils.keys import content_key

log = logging.getLogger(__name__)

WRITER_VERSION = 1  # bump when the written bytes change, so cached sets are rebuilt
_UCF_BUCKETS = ((1, 7), (8, 14), (15, 21), (22, 25))
_K400_SPLITS = ("train", "validate", "test", "train")
_FOLDER_SUFFIXES = (".mp4", ".mkv", ".mov")
_YT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MARKER = "rank_sweep_synth.json"


def as_dict(cfg: Any) -> dict:
    """A dataclass, DictConfig or mapping as a plain dict."""
    if is_dataclass(cfg):
        return asdict(cfg)
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return dict(cfg)


def _spec(spec: Any) -> SynthConfig:
    s = spec if isinstance(spec, SynthConfig) else SynthConfig(**as_dict(spec))
    for key in ("classes", "videos_per_class", "frames", "height", "width", "fps"):
        if not getattr(s, key) > 0:
            raise DataError(f"synth.{key} must be > 0, got {getattr(s, key)}")
    if s.domain not in DOMAINS:
        raise DataError(f"synth.domain={s.domain!r} is not allowed; allowed: {', '.join(DOMAINS)}")
    if s.height % 2 or s.width % 2:
        raise DataError(f"synth height/width must be even (yuv420p), got {s.height}x{s.width}")
    return s


def ucf_group_clip(v: int) -> tuple[int, int]:
    """(group, clip) of the v-th video of a class; see the module docstring."""
    lo, hi = _UCF_BUCKETS[v % 4]
    k, n = v // 4, hi - lo + 1
    return lo + k % n, k // n + 1


def ucf_test_groups(fold: int) -> range:
    """Official UCF-101 folds: fold 1 tests groups 1-7, fold 2 8-14, fold 3 15-21."""
    return range(7 * (fold - 1) + 1, 7 * fold + 1)


def _frames(spec: SynthConfig, c: int, v: int) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, c, v])
    return render_domain(spec.domain, c, rng, spec.frames, spec.height, spec.width)


def _name(spec: SynthConfig, c: int) -> str:
    return class_name(domain_class(spec.domain, c))


def _jobs(spec: SynthConfig):
    return [(c, v) for c in range(spec.classes) for v in range(spec.videos_per_class)]


def _write_ucf101(root: Path, spec: SynthConfig) -> None:
    names = [_name(spec, c) for c in range(spec.classes)]
    rel: dict[tuple[int, int], str] = {}
    for c, v in tqdm(_jobs(spec), desc="synth ucf101", leave=False):
        g, k = ucf_group_clip(v)
        rel[c, v] = f"{names[c]}/v_{names[c]}_g{g:02d}_c{k:02d}.avi"
        write_video(root / rel[c, v], _frames(spec, c, v), spec.fps, codec="mpeg4")
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    for fold in (1, 2, 3):
        test = ucf_test_groups(fold)
        train_lines, test_lines = [], []
        for (c, v), r in rel.items():
            if ucf_group_clip(v)[0] in test:
                test_lines.append(f"{r}\n")
            else:
                train_lines.append(f"{r} {c + 1}\n")
        (lists / f"trainlist0{fold}.txt").write_text("".join(train_lines))
        (lists / f"testlist0{fold}.txt").write_text("".join(test_lines))


def _youtube_id(rng: np.random.Generator) -> str:
    return "".join(_YT_ALPHABET[i] for i in rng.integers(0, len(_YT_ALPHABET), 11))


def _write_kinetics400(root: Path, spec: SynthConfig) -> None:
    codec = h264_encoder()
    if codec is None:
        log.warning("this PyAV build has no H.264 encoder: writing mpeg4 in .mp4 instead")
        codec = "mpeg4"
    rows: dict[str, list[dict]] = {s: [] for s in ("train", "validate", "test")}
    for c, v in tqdm(_jobs(spec), desc="synth kinetics400", leave=False):
        rng = np.random.default_rng([spec.seed, c, v, 400])
        yt, start = _youtube_id(rng), int(rng.integers(0, 300))
        split = _K400_SPLITS[v % 4]
        row = dict(
            label=readable(_name(spec, c)),
            youtube_id=yt,
            time_start=start,
            time_end=start + 10,
            split=split,
        )
        rows[split].append(row)
        write_video(
            root / split / f"{yt}_{start:06d}_{start + 10:06d}.mp4",
            _frames(spec, c, v),
            spec.fps,
            codec=codec,
        )
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        with open(ann / f"{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(
                f, fieldnames=["label", "youtube_id", "time_start", "time_end", "split"]
            )
            w.writeheader()
            w.writerows(items)


def _write_folder(root: Path, spec: SynthConfig, metadata_csv: bool) -> None:
    meta = []
    for i, (c, v) in enumerate(tqdm(_jobs(spec), desc="synth folder", leave=False)):
        name = f"{_name(spec, c)}_{v:03d}{_FOLDER_SUFFIXES[i % len(_FOLDER_SUFFIXES)]}"
        write_video(root / name, _frames(spec, c, v), spec.fps)
        if metadata_csv:
            meta.append({"video": name, "prompt": caption_for(_name(spec, c))})
        else:
            (root / name).with_suffix(".txt").write_text(caption_for(_name(spec, c)) + "\n")
    if metadata_csv:
        with open(root / "metadata.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["video", "prompt"])
            w.writeheader()
            w.writerows(meta)


def write_synthetic(
    layout: str, root: Path, spec: SynthConfig, *, metadata_csv: bool = False
) -> Path:
    """Write a seeded synthetic dataset in `layout` under `root` and return root.

    metadata_csv applies to the folder layout: one metadata.csv (video,prompt) instead of
    same-stem .txt captions.
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown synthetic layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    spec = _spec(spec)
    if layout == "ucf101" and spec.videos_per_class < 3:
        log.warning(
            "videos_per_class=%d < 3: some UCF-101 folds lack test clips", spec.videos_per_class
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if layout == "ucf101":
        _write_ucf101(root, spec)
    elif layout == "kinetics400":
        _write_kinetics400(root, spec)
    else:
        _write_folder(root, spec, metadata_csv)
    marker = {"layout": layout, "spec": asdict(spec), "writer_version": WRITER_VERSION}
    (root / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
    return root


def synth_key(layout: str, spec: Any) -> str:
    return content_key({"layout": layout, "spec": as_dict(spec), "v": WRITER_VERSION}, 10)


def ensure_synthetic(data_cfg: Any) -> Path:
    """The embedded default's dataset, written once under the cache and then reused.

    Written to a private temp dir and renamed into place: rename of a directory onto an
    existing non-empty one fails, so when two processes race the loser discards its copy.
    """
    layout = str(data_cfg.layout)
    spec = _spec(data_cfg.synth)
    final = cache_dir() / "data" / f"synthetic-{layout}-{synth_key(layout, spec)}"
    if (final / MARKER).exists():
        return final
    log.info("writing synthetic %s dataset to %s (first use)", layout, final)
    return publish_dir(
        final, lambda tmp: write_synthetic(layout, tmp, spec), lambda p: (p / MARKER).exists()
    )
