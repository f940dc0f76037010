"""Index the three on-disk layouts into clip entries (no decoding here).

A listed file that is not on disk is `missing` (counted, never fatal: real Kinetics
copies always miss some). A missing root, split file or malformed list is a DataError.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rank_sweep.data.errors import DataError
from rank_sweep.data.render import caption_for
from rank_sweep.data.video import VIDEO_SUFFIXES

LAYOUTS = ("ucf101", "kinetics400", "folder")  # what data.layout may say
UCF_SPLITS = ("train", "test")
K400_SPLITS = ("train", "validate", "test")


@dataclass(frozen=True)
class ClipEntry:
    path: Path
    label: int  # 0-based class id; -1 when the layout has no classes (folder)
    class_name: str
    caption: str


@dataclass
class Listing:
    entries: list[ClipEntry]
    class_names: list[str]
    missing: list[str] = field(default_factory=list)  # listed but not on disk
    skipped: list[dict] = field(default_factory=list)  # on disk but unusable as listed


def _require_root(root: Path, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{layout} root does not exist or is not a directory: {root}")
    return root


def _ucf_lists_dir(root: Path) -> Path:
    # The split zip is often unpacked next to UCF-101/ rather than inside it.
    for cand in (root / "ucfTrainTestlist", root.parent / "ucfTrainTestlist"):
        if cand.is_dir():
            return cand
    raise DataError(
        f"UCF-101 split files not found: expected {root / 'ucfTrainTestlist'}/ (or a sibling)"
    )


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def index_ucf101(root: Path, split: str, fold: int) -> Listing:
    root = _require_root(root, "UCF-101")
    if split not in UCF_SPLITS:
        raise DataError(f"UCF-101 split must be one of {UCF_SPLITS}, got {split!r}")
    if int(fold) not in (1, 2, 3):
        raise DataError(f"UCF-101 fold must be 1, 2 or 3, got {fold!r}")
    lists = _ucf_lists_dir(root)
    names: list[str] = []
    for n, line in _read_lines(lists / "classInd.txt"):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
            raise DataError(
                f"malformed classInd.txt line {n}: {line!r} (want '<1-based id> <Class>')"
            )
        names.append(parts[1])
    by_name = {nm.lower(): i for i, nm in enumerate(names)}
    list_file = lists / f"{split}list0{int(fold)}.txt"
    out = Listing(entries=[], class_names=names)
    for n, line in _read_lines(list_file):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        if len(parts) == 2 and parts[1].isdigit() and 1 <= int(parts[1]) <= len(names):
            label = int(parts[1]) - 1
        elif len(parts) == 1 and "/" in rel and rel.split("/")[0].lower() in by_name:
            label = by_name[rel.split("/")[0].lower()]
        else:
            raise DataError(f"malformed line {n} in {list_file.name}: {line!r}")
        path = root / rel
        if not path.exists():
            out.missing.append(str(path))
            continue
        out.entries.append(ClipEntry(path, label, names[label], caption_for(names[label])))
    return out


def _k400_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"Kinetics-400 annotation file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"youtube_id", "time_start", "time_end"}
        if not need <= set(reader.fieldnames or []):
            raise DataError(f"{path} lacks columns {sorted(need - set(reader.fieldnames or []))}")
        return list(reader)


def _k400_name(row: dict) -> str:
    return f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}.mp4"


def _k400_clip(root: Path, split: str, name: str, label: str) -> Optional[Path]:
    dirs = [root / split] + ([root / "val"] if split == "validate" else [])
    for d in dirs:
        for cand in (d / name, d / label / name):
            if cand.is_file():
                return cand
    return None


def index_kinetics400(root: Path, split: str) -> Listing:
    root = _require_root(root, "Kinetics-400")
    split = "validate" if split == "val" else split
    if split not in K400_SPLITS:
        raise DataError(f"Kinetics-400 split must be one of {K400_SPLITS}, got {split!r}")
    ann = root / "annotations"
    rows = _k400_rows(ann / f"{split}.csv")
    labels: set[str] = set()
    for s in K400_SPLITS:  # one label order across splits, so ids agree between them
        if (ann / f"{s}.csv").is_file():
            labels |= {
                r.get("label") or "" for r in (rows if s == split else _k400_rows(ann / f"{s}.csv"))
            }
    names = sorted(lab for lab in labels if lab)
    ids = {nm: i for i, nm in enumerate(names)}
    out = Listing(entries=[], class_names=names)
    for row in rows:
        label = row.get("label") or ""
        try:
            name = _k400_name(row)
        except ValueError as exc:
            raise DataError(f"bad time_start/time_end in {split}.csv row {row}: {exc}") from exc
        path = _k400_clip(root, split, name, label)
        if path is None:
            out.missing.append(str(root / split / name))
            continue
        out.entries.append(
            ClipEntry(path, ids.get(label, -1), label, caption_for(label) if label else "")
        )
    return out


def index_folder(root: Path) -> Listing:
    root = _require_root(root, "folder")
    out = Listing(entries=[], class_names=[])
    meta = root / "metadata.csv"
    if meta.is_file():
        with open(meta, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"video", "prompt"} <= set(reader.fieldnames or []):
                raise DataError(f"{meta} needs columns video,prompt; has {reader.fieldnames}")
            for row in reader:
                path = root / row["video"]
                if not path.is_file():
                    out.missing.append(str(path))
                    continue
                out.entries.append(ClipEntry(path, -1, "", row["prompt"].strip()))
        return out
    videos = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise DataError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) and no metadata.csv in {root}")
    for p in videos:
        txt = p.with_suffix(".txt")
        if not txt.is_file():
            out.skipped.append({"path": str(p), "reason": "no caption: same-stem .txt missing"})
            continue
        out.entries.append(ClipEntry(p, -1, "", txt.read_text(encoding="utf-8").strip()))
    return out


def index_layout(layout: str, root: Path, split: str, fold: int) -> Listing:
    if layout == "ucf101":
        return index_ucf101(root, split, fold)
    if layout == "kinetics400":
        return index_kinetics400(root, split)
    if layout == "folder":
        return index_folder(root)
    raise DataError(f"unknown data layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
