"""`python -m rank_sweep.eval --real DIR_OR_DATASET --fake DIR`: FVD/KID between clip sets.

--real is a folder of videos or a UCF-101 / Kinetics-400 root (auto-detected, or named
with --real-layout); a dataset split is clipped by the data layer at --height x --width.
Folder videos contribute their first --frames frames at native resolution. The detectors
resize either way, as the protocol does (bilinear to the detector size). Bad input: one
`error: ...` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from rank_sweep.data.errors import DataError
from rank_sweep.eval.clip_sources import (
    DEFAULT_SPLIT,
    LAYOUTS,
    CliError,
    folder_source,
    resolve_real,
    source_features,
)
from rank_sweep.eval.detectors.loaders import (
    Detector,
    DetectorError,
    load_frame_detector,
    load_video_detector,
)
from rank_sweep.eval.detectors.trust import UntrustedDetector
from rank_sweep.eval.scoring import KNOWN_METRICS, protocol_stamp, score
from rank_sweep.track.contract import TAG_DETECTOR_PRETRAINED


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rank_sweep.eval", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--real", required=True, type=Path, help="folder of real videos or a dataset root"
    )
    p.add_argument("--fake", required=True, type=Path, help="folder of generated videos")
    p.add_argument(
        "--real-layout", default="auto", help=f"one of {', '.join(LAYOUTS)} (default: auto)"
    )
    p.add_argument(
        "--real-split",
        default=None,
        help=f"dataset split (default: {', '.join(f'{k} {v}' for k, v in DEFAULT_SPLIT.items())})",
    )
    p.add_argument("--real-fold", type=int, default=None, help="UCF-101 fold 1..3 (default 1)")
    p.add_argument("--num-real", type=int, default=None, help="cap on real clips (default: all)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (protocol: 16)")
    p.add_argument("--height", type=int, default=224, help="dataset clip height, multiple of 16")
    p.add_argument("--width", type=int, default=224, help="dataset clip width, multiple of 16")
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
    p.add_argument(
        "--trust-torchscript",
        action="store_true",
        help="load TorchScript detector files of unknown sha256 (they can run code)",
    )
    p.add_argument("--size", type=int, default=224, help="I3D input size (protocol: 224)")
    p.add_argument("--frame-size", type=int, default=299, help="Inception input size (FID: 299)")
    p.add_argument("--metrics", default="fvd,kid", help="comma list of fvd,kid,kvd")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument(
        "--bootstrap", type=int, default=0, help="resamples for 95%% intervals (0: none)"
    )
    p.add_argument("--ddof", type=int, default=0, help="FVD covariance ddof (StyleGAN-V: 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print a JSON line last")
    return p


def _check_args(args: argparse.Namespace) -> list[str]:
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics or set(metrics) - set(KNOWN_METRICS):
        raise CliError(f"--metrics {args.metrics!r} invalid; allowed: {', '.join(KNOWN_METRICS)}")
    if args.frames < 1:
        raise CliError(f"--frames must be >= 1, got {args.frames}")
    if args.num_real is not None and args.num_real < 2:
        raise CliError(f"--num-real must be >= 2 (a covariance needs 2 clips), got {args.num_real}")
    return metrics


def _source_fingerprint(src: Any) -> str:
    if hasattr(src.items, "fingerprint"):  # a dataset split: its own content fingerprint
        return str(src.items.fingerprint())
    h = hashlib.sha256()
    for p in src.items:  # a folder: names, sizes and mtimes of the files
        st = Path(p).stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _real_features(src: Any, dets: dict[str, Detector]) -> tuple[dict[str, Any], int, bool]:
    """Real features through the sweep-wide real-feature cache (one entry per detector)."""
    from rank_sweep.eval.real_stats import cached_real, real_stats_key

    fp = _source_fingerprint(src)
    keys = {
        k: real_stats_key(source="cli", clips=fp, frames=src.frames, detector=d.sha256, size=d.size)
        for k, d in dets.items()
    }
    computed: dict[str, Any] = {}

    def compute(kind: str) -> Any:
        if not computed:
            computed.update(source_features(src, dets, "real")[0])
        return computed[kind]

    out, hits = {}, []
    for kind, det in dets.items():
        out[kind], hit = cached_real(keys[kind], det.sha256, lambda k=kind: compute(k))
        hits.append(hit)
    if len({len(v) for v in out.values()}) != 1:  # one kind cached from another clip set
        computed.clear()
        out = {k: compute(k) for k in dets}
    return out, len(next(iter(out.values()))), all(hits)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score --fake against --real; returns the JSON-able result (metrics, stamp, counts)."""
    metrics = _check_args(args)
    real_src = resolve_real(
        args.real,
        args.real_layout,
        args.real_split,
        args.real_fold,
        frames=args.frames,
        height=args.height,
        width=args.width,
        limit=args.num_real,
    )
    fake_src = folder_source(args.fake, args.frames)
    dets: dict[str, Detector] = {}
    if {"fvd", "kvd"} & set(metrics):
        dets["video"] = load_video_detector(
            args.i3d, size=args.size, device=args.device, trust_torchscript=args.trust_torchscript
        )
    if "kid" in metrics:
        dets["frame"] = load_frame_detector(
            args.inception,
            size=args.frame_size,
            device=args.device,
            trust_torchscript=args.trust_torchscript,
        )
    real, n_real, cached = _real_features(real_src, dets)
    fake, n_fake = source_features(fake_src, dets, "fake")
    scores = score(
        real,
        fake,
        metrics=metrics,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        seed=args.seed,
        bootstrap=args.bootstrap,
        ddof=args.ddof,
    )
    stamp = protocol_stamp(
        dets.get("video"),
        dets.get("frame"),
        n_real=n_real,
        n_fake=n_fake,
        frames=args.frames,
        resolution=real_src.resolution,
        dataset=real_src.dataset,
        split=real_src.split,
        sample_steps=0,
        seed=args.seed,
        kid_subset_size=int(scores.get("kid_subset_size_used", args.kid_subset_size)),
        cov_ddof=args.ddof,
        bootstrap=args.bootstrap,
        tier="cli",
    )
    return {
        "real_from_cache": cached,
        "metrics": scores,
        "stamp": stamp,
        "n_real": n_real,
        "n_fake": n_fake,
        "real_skipped": real_src.n_skipped(),
        "real_missing": real_src.missing,
        "fake_skipped": fake_src.n_skipped(),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(args)
    except (CliError, DataError, DetectorError, UntrustedDetector) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result["stamp"][TAG_DETECTOR_PRETRAINED] == "false":
        print(
            "WARNING: random-init detectors: these numbers only compare runs with each other",
            file=sys.stderr,
        )
    print(f"{'metric':<24}{'value':>16}")
    for k, v in result["metrics"].items():
        print(f"{k:<24}{v:>16.6g}")
    print(
        f"real clips: {result['n_real']} ({result['stamp']['eval.dataset']} "
        f"split {result['stamp']['eval.split']}; skipped {result['real_skipped']} unreadable, "
        f"{result['real_missing']} missing)  fake clips: {result['n_fake']} "
        f"(skipped {result['fake_skipped']})  frames: {args.frames}"
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0
