"""Decode throughput of the data layer, for the record.

Writes a small synthetic UCF-101 (mpeg4 .avi) and Kinetics-400 (h264 .mp4) set at
240x320 (UCF-101's resolution) to a temp dir, then times 16x224x224 training clips
(random start, short-side resize + center crop) single process and with 2 DataLoader
workers. Runs in well under a minute on 2 cores.

    .venv/bin/python benchmarks/bench_decode.py [--videos-per-class 4] [--seconds 6]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from rank_sweep.config.schema import DataConfig, SynthConfig
from rank_sweep.data import build_dataset
from rank_sweep.data.synth import write_synthetic


def clips_per_second(ds, workers: int, budget_s: float) -> tuple[float, int]:
    """Decode clips drawn with replacement until budget_s has passed (worker start-up
    included, as a training run pays it); returns (clips/s, clips decoded)."""
    sampler = RandomSampler(
        ds, replacement=True, num_samples=100_000, generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(ds, batch_size=1, sampler=sampler, num_workers=workers)
    n = 0
    t0 = time.perf_counter()
    for batch in loader:
        n += batch["video"].shape[0]
        if time.perf_counter() - t0 >= budget_s:
            break
    rate = n / (time.perf_counter() - t0)
    del loader
    return rate, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos-per-class", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6.0, help="timing budget per measurement")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RANK_SWEEP_CACHE"] = str(
            Path(tmp) / "cache"
        )  # keep the probe cache out of the repo
        spec = SynthConfig(
            classes=4,
            videos_per_class=args.videos_per_class,
            frames=48,
            height=240,
            width=320,
            fps=25,
        )
        print(
            f"cpu cores: {os.cpu_count()}; clips 16x224x224 from 240x320 videos of {spec.frames} frames"
        )
        for layout, split in (("ucf101", "train"), ("kinetics400", "train")):
            root = Path(tmp) / layout
            t0 = time.perf_counter()
            write_synthetic(layout, root, spec)
            write_s = time.perf_counter() - t0
            cfg = DataConfig(name=layout, layout=layout, root=str(root))
            t0 = time.perf_counter()
            ds = build_dataset(cfg, split, train=True, frames=16, height=224, width=224)
            scan_s = time.perf_counter() - t0
            rate1, n1 = clips_per_second(ds, 0, args.seconds)
            rate2, n2 = clips_per_second(ds, args.workers, args.seconds)
            codec = "mpeg4/.avi" if layout == "ucf101" else "h264/.mp4"
            print(
                f"{layout:<12} {codec:<10} {len(ds):>3} videos (write {write_s:.1f}s, probe {scan_s:.2f}s): "
                f"single process {rate1:6.1f} clips/s ({n1} clips) | "
                f"{args.workers} workers {rate2:6.1f} clips/s ({n2} clips)"
            )


if __name__ == "__main__":
    main()
