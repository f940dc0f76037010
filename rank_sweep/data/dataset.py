"""VideoClipDataset: fixed-size clips from any layout, with bad videos skipped and counted.

Every listed video is probed at construction (cached, see scan.py); the unusable ones
(unreadable, truncated, zero-byte, odd codec, too short for the clip) go to `.skipped`
with a reason. A decode failure later, at __getitem__, is recorded the same way and the
item is replaced by the next good clip, so a training run never dies on one bad file.
(With DataLoader workers such late failures are recorded in the worker's copy only and
show up in its log; the construction-time scan is what `.stats()` reports reliably.)
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import Dataset

from rank_sweep.data.errors import DataError
from rank_sweep.data.layouts import ClipEntry, index_layout
from rank_sweep.data.sampling import (
    clip_offsets,
    clip_span,
    eval_start,
    frame_step,
    subset_order,
    train_start,
)
from rank_sweep.data.scan import scan
from rank_sweep.data.splits import SplitName, rule_for, select
from rank_sweep.data.video import DECODED_CLIPS, VideoInfo
from rank_sweep.utils.keys import content_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSpec:
    frames: int
    height: int
    width: int
    fps: Optional[float]  # None = native rate
    stride: int

    def step(self, native_fps: float) -> float:
        return frame_step(native_fps, self.fps, self.stride)


class VideoClipDataset(Dataset):
    """Items: dict(pixels float32 [3,T,H,W] in [-1,1], video uint8 [T,H,W,3], first_frame
    uint8 [H,W,3], caption, label, class_name, path, index). `index` is the position asked
    for; `path` is the file actually decoded (differs only after a replacement)."""

    def __init__(
        self,
        *,
        clips: list[tuple[ClipEntry, VideoInfo]],
        class_names: list[str],
        spec: ClipSpec,
        train: bool,
        seed: int,
        meta: dict[str, Any],
        skipped: list[dict],
        missing: list[str],
    ) -> None:
        if not clips:
            raise DataError(f"no usable clips in {meta}")
        self.clips = clips
        self.class_names = list(class_names)
        self.spec = spec
        self.train = train
        self.seed = int(seed)
        # Latents are precomputed once per clip position, so every epoch trains on the
        # start drawn for epoch 0; `train_start` still takes the epoch for other callers.
        self.epoch = 0
        self.meta = meta  # layout, root, split, fold, name
        self.skipped = skipped
        self.missing = missing
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.clips)

    def indices_for(self, i: int) -> list[int]:
        """Source frame indices of clip i under the current epoch (pure given state)."""
        _, info = self.clips[i]
        step = self.spec.step(info.fps)
        span = clip_span(self.spec.frames, step)
        if self.train:
            start = train_start(info.frames, span, self.seed, self.epoch, i)
        else:
            start = eval_start(info.frames, span)
        return [start + o for o in clip_offsets(self.spec.frames, step)]

    def _load(self, j: int, i: int) -> dict:
        entry, _ = self.clips[j]
        video = DECODED_CLIPS.read(
            entry.path, self.indices_for(j), (self.spec.height, self.spec.width)
        )
        v = torch.from_numpy(video)
        pixels = v.permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)
        return {
            "pixels": pixels,
            "video": v,
            "first_frame": v[0].clone(),
            "caption": entry.caption,
            "label": entry.label,
            "class_name": entry.class_name,
            "path": str(entry.path),
            "index": i,
        }

    def __getitem__(self, i: int) -> dict:
        n = len(self.clips)
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} clips")
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                return self._load(j, i)
            except DataError as exc:
                # Recorded, logged and counted in .skipped; the next good clip stands in.
                self._bad.add(j)
                self.skipped.append(
                    {"path": str(self.clips[j][0].path), "reason": f"decode: {exc}"}
                )
                log.warning("clip %s failed to decode, replaced: %s", self.clips[j][0].path, exc)
        raise DataError(
            f"all {n} clips failed to decode; first reason: {self.skipped[-n]['reason']}"
        )

    def stats(self) -> dict:
        reasons = Counter(s["reason"].split(":")[0] for s in self.skipped)
        return {
            "clips": len(self.clips) - len(self._bad),
            "classes": len(self.class_names),
            "unreadable": len(self.skipped),
            "missing": len(self.missing),
            "reasons": dict(reasons),
        }

    def fingerprint(self) -> str:
        """Stable hash of what the clips are: layout, split, files (+sizes), clip geometry
        and sampling rule. Paths are relative to the root so a moved copy keeps its key."""
        root = Path(self.meta["root"])
        files = []
        for entry, _ in self.clips:
            try:
                rel = str(entry.path.relative_to(root))
            except ValueError:
                rel = str(entry.path)
            files.append([rel, entry.path.stat().st_size])
        blob = {
            "layout": self.meta["layout"],
            "split": self.meta["split"],
            "fold": self.meta["fold"],
            "files": files,
            "frames": self.spec.frames,
            "size": [self.spec.height, self.spec.width],
            "fps": self.spec.fps,
            "stride": self.spec.stride,
            "sampling": f"train(seed={self.seed})" if self.train else "eval(start=0)",
        }
        return content_key(blob, 16)


def _resolve_root(data_cfg: Any) -> Path:
    if data_cfg.root is None:
        if str(data_cfg.name) != "synthetic":
            raise DataError(
                f"data.root is null for dataset {data_cfg.name!r}; only 'synthetic' may omit it"
            )
        from rank_sweep.data.synth import ensure_synthetic

        return ensure_synthetic(data_cfg)
    return Path(str(data_cfg.root)).expanduser()


def _check_geometry(
    frames: int, height: int, width: int, fps: Optional[float], stride: int
) -> None:
    for key, val in (("frames", frames), ("height", height), ("width", width), ("stride", stride)):
        if not int(val) >= 1:
            raise DataError(f"clip {key} must be >= 1, got {val}")
    if fps is not None and not float(fps) > 0:
        raise DataError(f"data.fps must be null (native) or > 0, got {fps}")


def build_dataset(
    data_cfg: Any,
    split: str,
    *,
    train: bool,
    frames: int,
    height: int,
    width: int,
    seed: int = 0,
    max_clips: Optional[int] = None,
) -> VideoClipDataset:
    """Index, probe (cached) and filter one split of the configured dataset.

    With max_clips, listed clips are visited in a seeded shuffle and probed in chunks until
    max_clips usable ones are found, so capping a 240k-clip Kinetics split stays cheap.
    """
    fps = None if data_cfg.fps is None else float(data_cfg.fps)
    stride = int(getattr(data_cfg, "stride", 1))
    _check_geometry(frames, height, width, fps, stride)
    if max_clips is not None and int(max_clips) < 1:
        raise DataError(f"max_clips must be >= 1 or null, got {max_clips}")
    spec = ClipSpec(int(frames), int(height), int(width), fps, stride)
    root = _resolve_root(data_cfg)
    layout, fold = str(data_cfg.layout), int(getattr(data_cfg, "fold", 1))
    name = SplitName.parse(split)  # "train#val" / "train#fit": the carved validation slice
    listing = index_layout(layout, root, name.base, fold)
    rule = rule_for(layout, str(getattr(data_cfg, "val_rule", "auto")))
    listing.entries, carved = select(
        listing.entries, name.part, rule, float(getattr(data_cfg, "val_fraction", 0.1)),
        lambda e: e.path,
    )  # fmt: skip
    meta = {
        "name": str(data_cfg.name),
        "layout": layout,
        "root": str(root),
        "split": split,
        "fold": fold,
        "split_rule": carved.describe() if carved else "as listed",
    }
    if not listing.entries and not listing.skipped:
        raise DataError(
            f"no clips found for {layout} split {split!r} at {root} ({len(listing.missing)} listed but missing)"
        )
    entries = listing.entries
    order = subset_order(len(entries), max_clips, seed)
    skipped = list(listing.skipped)
    good: list[int] = []
    infos: dict[int, VideoInfo] = {}
    pos = 0
    while pos < len(order) and (max_clips is None or len(good) < max_clips):
        want = len(order) if max_clips is None else max(64, int((max_clips - len(good)) * 1.25))
        chunk, pos = order[pos : pos + want], pos + want
        results = scan([entries[k].path for k in chunk], desc=f"probe {layout}/{split}")
        for k in chunk:
            r = results[entries[k].path]
            if isinstance(r, str):
                skipped.append({"path": str(entries[k].path), "reason": r})
                continue
            need = clip_span(spec.frames, spec.step(r.fps))
            if r.frames < need:
                skipped.append(
                    {
                        "path": str(entries[k].path),
                        "reason": f"too short: {r.frames} frames, clip needs {need}",
                    }
                )
                continue
            good.append(k)
            infos[k] = r
    if max_clips is not None:
        good = good[:max_clips]
    clips = [(entries[k], infos[k]) for k in sorted(good)]
    if not clips:
        top = Counter(s["reason"].split(":")[0] for s in skipped).most_common(3)
        raise DataError(
            f"no usable clips for {layout} split {split!r} at {root}: {len(skipped)} skipped "
            f"({', '.join(f'{r} x{n}' for r, n in top)}), {len(listing.missing)} missing"
        )
    if skipped or listing.missing:
        log.warning(
            "%s/%s: %d usable clips, %d skipped, %d missing",
            layout,
            split,
            len(clips),
            len(skipped),
            len(listing.missing),
        )
    return VideoClipDataset(
        clips=clips,
        class_names=listing.class_names,
        spec=spec,
        train=train,
        seed=seed,
        meta=meta,
        skipped=skipped,
        missing=listing.missing,
    )
