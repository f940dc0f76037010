"""`python -m rank_sweep.data check|synth`: inspect a dataset copy, or write a synthetic one.

check probes every listed video of the chosen split(s) (all splits of the layout when
--split is not given) and prints a summary; with --json the last line is JSON with
clips, classes, unreadable [{path, reason}], missing (count) and missing_paths.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Optional

from rank_sweep.config.schema import DataConfig, SynthConfig
from rank_sweep.data.dataset import build_dataset
from rank_sweep.data.errors import DataError
from rank_sweep.data.layouts import K400_SPLITS, UCF_SPLITS
from rank_sweep.data.synth import LAYOUTS, write_synthetic


def _splits(layout: str, root: Path, split: Optional[str]) -> list[str]:
    if split:
        return [split]
    if layout == "ucf101":
        return list(UCF_SPLITS)
    if layout == "kinetics400":
        found = [s for s in K400_SPLITS if (root / "annotations" / f"{s}.csv").is_file()]
        if not found:
            raise DataError(
                f"no annotation CSVs in {root / 'annotations'} (want train/validate/test.csv)"
            )
        return found
    return ["all"]


def check(args: argparse.Namespace) -> dict:
    root = Path(args.root)
    cfg = DataConfig(
        name=args.layout,
        layout=args.layout,
        root=str(root),
        fold=args.fold,
        fps=args.fps,
        stride=args.stride,
    )
    per_split, unreadable, missing, classes = {}, {}, [], 0
    for split in _splits(args.layout, root, args.split):
        ds = build_dataset(cfg, split, train=False, frames=args.frames, height=32, width=32)
        per_split[split] = ds.stats()
        classes = max(classes, len(ds.class_names))
        unreadable.update({s["path"]: s["reason"] for s in ds.skipped})
        missing.extend(ds.missing)
    return {
        "layout": args.layout,
        "root": str(root),
        "fold": args.fold if args.layout == "ucf101" else None,
        "frames": args.frames,
        "splits": per_split,
        "clips": sum(s["clips"] for s in per_split.values()),
        "classes": classes,
        "unreadable": [{"path": p, "reason": r} for p, r in sorted(unreadable.items())],
        "missing": len(missing),
        "missing_paths": sorted(set(missing)),
    }


def _print_summary(res: dict) -> None:
    fold = f" fold {res['fold']}" if res["fold"] else ""
    print(f"{res['layout']} at {res['root']}{fold} (clips of {res['frames']} frames)")
    for split, s in res["splits"].items():
        print(
            f"  {split:>8}: {s['clips']} clips, {s['classes']} classes, {s['unreadable']} unreadable, {s['missing']} missing"
        )
    print(
        f"  total: {res['clips']} usable clips, {len(res['unreadable'])} unreadable, {res['missing']} missing"
    )
    for item in res["unreadable"][:20]:
        print(f"  unreadable {item['path']}: {item['reason']}")
    if len(res["unreadable"]) > 20:
        print(f"  ... and {len(res['unreadable']) - 20} more (see --json)")
    for p in res["missing_paths"][:5]:
        print(f"  missing {p}")


def synth(args: argparse.Namespace) -> Path:
    spec = SynthConfig(**{f.name: getattr(args, f.name) for f in fields(SynthConfig)})
    return write_synthetic(args.layout, Path(args.root), spec, metadata_csv=args.metadata_csv)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rank_sweep.data", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="probe a dataset copy and report unusable/missing videos")
    c.add_argument("--layout", required=True, choices=LAYOUTS)
    c.add_argument("--root", required=True)
    c.add_argument("--split", default=None, help="default: every split of the layout")
    c.add_argument("--fold", type=int, default=1, choices=(1, 2, 3), help="UCF-101 fold")
    c.add_argument(
        "--frames", type=int, default=16, help="clip length a video must cover (16 = FVD protocol)"
    )
    c.add_argument("--fps", type=float, default=None, help="target fps (default: native)")
    c.add_argument("--stride", type=int, default=1)
    c.add_argument("--json", action="store_true", help="end with one line of JSON")
    s = sub.add_parser("synth", help="write a seeded synthetic dataset in an official layout")
    s.add_argument("--layout", required=True, choices=LAYOUTS)
    s.add_argument("--root", required=True)
    d = SynthConfig()
    for f in fields(SynthConfig):
        value = getattr(d, f.name)
        s.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=type(value), default=value
        )
    s.add_argument(
        "--metadata-csv", action="store_true", help="folder layout: metadata.csv instead of .txt"
    )
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if getattr(args, "json", False) else logging.WARNING)
    try:
        if args.cmd == "synth":
            root = synth(args)
            print(f"wrote synthetic {args.layout} dataset to {root}")
            return 0
        res = check(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_summary(res)
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
