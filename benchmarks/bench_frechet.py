"""Frechet distance: the project's exact eigenvalue form vs scipy.linalg.sqrtm, and I3D
feature throughput, for the record.

For d = 400, 1024, 2048 the same covariances (from 2d random correlated features) go to
`frechet_distance` (Cholesky + eigvalsh) and to the textbook sqrtm formula; prints both
times, the speed-up and the relative difference. Then times the random-init I3D detector
on 16x224x224 uint8 clips on CPU. The last line is the speed-up at d = 2048 (goal >= 5x).

    .venv/bin/python benchmarks/bench_frechet.py [--dims 400 1024 2048] [--clips 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial

import numpy as np
import scipy.linalg
import torch

from rank_sweep.eval.metrics import frechet_distance


def sqrtm_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real
    )


def stats(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(2 * d, d)) @ mix + rng.normal(size=d) * 0.1
    return x.mean(0), np.cov(x, rowvar=False)


def best_of(fn, repeat: int) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def bench_frechet(dims: list[int]) -> float:
    ratio = float("nan")
    print(f"{'d':>6} {'ours_s':>9} {'sqrtm_s':>9} {'speedup':>8} {'rel_diff':>10}")
    for d in dims:
        mu1, s1 = stats(d, 0)
        mu2, s2 = stats(d, 1)
        t_ours, ours = best_of(partial(frechet_distance, mu1, s1, mu2, s2), 3)
        t_ref, ref = best_of(partial(sqrtm_frechet, mu1, s1, mu2, s2), 1 if d > 1024 else 2)
        ratio = t_ref / t_ours
        print(
            f"{d:>6} {t_ours:>9.3f} {t_ref:>9.3f} {ratio:>7.1f}x {abs(ours - ref) / abs(ref):>10.2e}"
        )
    return ratio


def bench_i3d(clips: int, batch: int) -> None:
    from rank_sweep.eval.detectors.loaders import load_video_detector

    os.environ.setdefault("RANK_SWEEP_CACHE", tempfile.mkdtemp(prefix="bench_frechet_"))
    det = load_video_detector(None, size=224, device="cpu")
    videos = np.random.default_rng(0).integers(0, 256, (batch, 16, 224, 224, 3), dtype=np.uint8)
    det.features(videos)  # warm-up (oneDNN primitive creation)
    t0 = time.perf_counter()
    done = 0
    while done < clips:
        det.features(videos)
        done += batch
    dt = time.perf_counter() - t0
    print(
        f"I3D features (random-init, 16x224x224, CPU, {torch.get_num_threads()} threads, "
        f"batch {batch}): {done / dt:.2f} clips/s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[400, 1024, 2048])
    p.add_argument("--clips", type=int, default=4, help="I3D clips to time (0 skips)")
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()
    if args.clips > 0:
        bench_i3d(args.clips, args.batch)
    ratio = bench_frechet(args.dims)
    print(f"speedup at d={args.dims[-1]}: {ratio:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
