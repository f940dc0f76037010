"""Where the eval CLI gets its clips: a plain folder of videos or a dataset split.

`--real` may name either; the dataset form goes through the project's data layer
(`build_dataset`), so a UCF-101 / Kinetics-400 split is listed, probed and clipped exactly
as training and periodic evaluation see it. Unreadable files are skipped and counted,
never silently replaced: a replacement would duplicate a clip and bias the statistics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm.auto import tqdm

from rank_sweep.data.errors import DataError
from rank_sweep.data.video import VIDEO_SUFFIXES, read_frames

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "folder", "ucf101", "kinetics400")
DEFAULT_SPLIT = {"ucf101": "test", "kinetics400": "validate"}
K400_ANNOTATIONS = ("train.csv", "validate.csv", "test.csv")


class CliError(ValueError):
    """Bad command-line input; the message is one line."""


def detect_layout(root: Path) -> str:
    """ucf101 (split lists inside or beside the root), kinetics400 (annotations/*.csv),
    else folder."""
    if not root.is_dir():
        raise CliError(f"{root} does not exist or is not a directory")
    if (root / "ucfTrainTestlist").is_dir() or (root.parent / "ucfTrainTestlist").is_dir():
        return "ucf101"
    if any((root / "annotations" / name).is_file() for name in K400_ANNOTATIONS):
        return "kinetics400"
    return "folder"


@dataclass
class ClipSource:
    """Clips to score: `load(i)` gives uint8 [T, H, W, 3] or None (skipped, counted)."""

    dataset: str  # protocol stamp: what the clips are
    split: str
    resolution: str
    items: Any  # list of paths (folder) or a VideoClipDataset
    frames: int
    missing: int = 0  # listed but absent (datasets only)
    skipped: list[str] = field(default_factory=list)  # reasons, one per unusable file

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> Optional[np.ndarray]:
        if isinstance(self.items, list):
            try:
                return read_frames(self.items[i], range(self.frames))
            except DataError as exc:
                self.skipped.append(f"{self.items[i]}: {exc}")
                log.warning("skipped %s: %s", self.items[i], exc)
                return None
        item = self.items[i]
        if item["path"] != str(self.items.clips[i][0].path):
            return None  # clip i failed to decode (counted in .skipped); no stand-in
        return np.asarray(item["video"])

    def n_skipped(self) -> int:
        if isinstance(self.items, list):
            return len(self.skipped)
        return len(self.items.skipped)


def folder_source(root: Path, frames: int, limit: Optional[int] = None) -> ClipSource:
    """Every video under root (recursive, sorted), cut to its first `frames` frames."""
    if not root.is_dir():
        raise CliError(f"{root} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise CliError(f"{root} holds {len(files)} videos ({', '.join(VIDEO_SUFFIXES)}); need >= 2")
    return ClipSource(str(root), "-", "native", files[:limit] if limit else files, frames)


def dataset_source(
    root: Path,
    layout: str,
    split: Optional[str],
    fold: int,
    *,
    frames: int,
    height: int,
    width: int,
    limit: Optional[int] = None,
) -> ClipSource:
    """One split of a UCF-101 / Kinetics-400 copy through the data layer (eval sampling:
    frames from the clip start, resized and center-cropped to height x width)."""
    from rank_sweep.config.schema import DataConfig
    from rank_sweep.data import build_dataset

    split = split or DEFAULT_SPLIT[layout]
    cfg = DataConfig(name=layout, layout=layout, root=str(root), fold=fold)
    ds = build_dataset(
        cfg, split, train=False, frames=frames, height=height, width=width, max_clips=limit
    )
    tag = f"{split}{fold}" if layout == "ucf101" else split
    return ClipSource(
        f"{layout}:{root}", tag, f"{height}x{width}", ds, frames, missing=len(ds.missing)
    )


def resolve_real(
    root: Path,
    layout: str,
    split: Optional[str],
    fold: Optional[int],
    *,
    frames: int,
    height: int,
    width: int,
    limit: Optional[int],
) -> ClipSource:
    """`--real` as a folder or a dataset split; layout 'auto' detects which."""
    if layout not in LAYOUTS:
        raise CliError(f"--real-layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "folder":
        if split is not None or fold is not None:
            raise CliError(
                f"--real-split/--real-fold need a dataset layout; {root} is read as a plain "
                "folder (pass --real-layout ucf101|kinetics400 if it is a dataset root)"
            )
        return folder_source(root, frames, limit)
    for key, val in (("--height", height), ("--width", width)):
        if val < 16 or val % 16:
            raise CliError(f"{key} must be a positive multiple of 16, got {val}")
    return dataset_source(
        root,
        layout,
        split,
        1 if fold is None else fold,
        frames=frames,
        height=height,
        width=width,
        limit=limit,
    )


def source_features(
    src: ClipSource, dets: dict[str, Any], desc: str
) -> tuple[dict[str, np.ndarray], int]:
    """Detector features per kind over the usable clips, and how many clips were used."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in dets}
    for i in tqdm(range(len(src)), desc=desc, leave=False):
        clip = src.load(i)
        if clip is None:
            continue
        for kind, det in dets.items():  # one clip per call: folder clip sizes may differ
            out[kind].append(det.features(clip[None]))
    used = len(next(iter(out.values()))) if out else 0
    if used < 2:
        raise CliError(
            f"{desc}: {used} usable clips of {len(src)} ({src.n_skipped()} unreadable); need >= 2"
        )
    return {k: np.concatenate(v) for k, v in out.items()}, used
