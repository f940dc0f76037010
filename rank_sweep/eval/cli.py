"""`python -m rank_sweep.eval --real DIR --fake DIR`: FVD/KID between two folders of videos.

Each video contributes its first --frames frames, decoded with PyAV at native resolution;
the detectors resize them as the protocol does (bilinear to the detector size).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from rank_sweep.data.video import VIDEO_SUFFIXES, read_frames
from rank_sweep.eval.detectors.loaders import Detector, load_frame_detector, load_video_detector
from rank_sweep.eval.scoring import protocol_stamp, score


def list_videos(root: Path) -> list[Path]:
    if not root.is_dir():
        raise SystemExit(f"error: {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise SystemExit(
            f"error: {root} holds {len(files)} videos ({', '.join(VIDEO_SUFFIXES)}); need >= 2"
        )
    return files


def folder_features(
    files: list[Path], frames: int, dets: dict[str, Detector], desc: str
) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {k: [] for k in dets}
    for path in tqdm(files, desc=desc, leave=False):
        clip = read_frames(path, range(frames))[None]  # one clip per call: sizes may differ
        for kind, det in dets.items():
            out[kind].append(det.features(clip))
    return {k: np.concatenate(v) for k, v in out.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rank_sweep.eval", description=__doc__.splitlines()[0]
    )
    p.add_argument("--real", required=True, type=Path, help="folder of real videos")
    p.add_argument("--fake", required=True, type=Path, help="folder of generated videos")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (protocol: 16)")
    p.add_argument(
        "--i3d",
        default=None,
        help="i3d_torchscript.pt or i3d_pretrained_400.pt (default: random init)",
    )
    p.add_argument(
        "--inception",
        default=None,
        help="inception-2015-12-05.pt or FID state dict (default: random init)",
    )
    p.add_argument("--size", type=int, default=224, help="I3D input size (protocol: 224)")
    p.add_argument("--frame-size", type=int, default=299, help="Inception input size (FID: 299)")
    p.add_argument("--metrics", default="fvd,kid", help="comma list of fvd,kid,kvd")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--bootstrap", type=int, default=0, help="resamples for 95%% CIs (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print a JSON line last")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.frames < 1:
        raise SystemExit(f"error: --frames must be >= 1, got {args.frames}")
    real_files, fake_files = list_videos(args.real), list_videos(args.fake)
    dets: dict[str, Detector] = {}
    if {"fvd", "kvd"} & set(metrics):
        dets["video"] = load_video_detector(args.i3d, size=args.size, device=args.device)
    if "kid" in metrics:
        dets["frame"] = load_frame_detector(
            args.inception, size=args.frame_size, device=args.device
        )
    real = folder_features(real_files, args.frames, dets, "real")
    fake = folder_features(fake_files, args.frames, dets, "fake")
    scores = score(
        real,
        fake,
        metrics=metrics,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        seed=args.seed,
        bootstrap=args.bootstrap,
    )
    stamp = protocol_stamp(
        dets.get("video"),
        dets.get("frame"),
        n_real=len(real_files),
        n_fake=len(fake_files),
        frames=args.frames,
        resolution="native",
        dataset=str(args.real),
        split="-",
        sample_steps=0,
        seed=args.seed,
        kid_subset_size=int(scores.get("kid_subset_size_used", args.kid_subset_size)),
    )
    if stamp["detector.pretrained"] == "false":
        print(
            "WARNING: random-init detectors: these numbers only compare runs with each other",
            file=sys.stderr,
        )
    print(f"{'metric':<24}{'value':>16}")
    for k, v in scores.items():
        print(f"{k:<24}{v:>16.6g}")
    print(f"real clips: {len(real_files)}  fake clips: {len(fake_files)}  frames: {args.frames}")
    if args.json:
        print(json.dumps({"metrics": scores, "stamp": stamp}, sort_keys=True))
    return 0
