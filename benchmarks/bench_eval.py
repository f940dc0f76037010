"""Evaluation at scale and the honesty of its intervals.

1. Coverage simulation (`--coverage`): Gaussians with a known FVD difference. Real clips
   ~ N(0, I); run A and run B share the clip-level latent z_i (same first frame and noise
   in the real protocol), A_i = mu_A + z_i, B_i = mu_B + rho z_i + sqrt(1 - rho^2) e_i, so
   both have covariance I and the true dFVD = |mu_A|^2 - |mu_B|^2 exactly (equal covariances:
   the estimator's bias is the same for both and cancels in expectation). Each repetition
   draws fresh data, computes the per-run and paired intervals of `rank_sweep.eval.stats`
   and checks whether they contain their target: dFVD for the paired interval, the
   estimator's expectation at this N (Monte-Carlo, many draws) for the per-run interval.
   A second scenario gives B a wider covariance (true dFVD from the closed form; the bias no
   longer cancels exactly) and reports coverage of both the closed-form and the expected dFVD.
2. Memory/time (`--memory`): the final-tier evaluator on the tiny model for N clips, one
   fresh process per N; host RSS is sampled during the eval, and memory above the RSS at the
   eval's start (the fixed cost: model, detectors, real features) must stay flat in N.

    .venv/bin/python benchmarks/bench_eval.py --coverage [--reps 200] [--n 256] [--d 32]
    .venv/bin/python benchmarks/bench_eval.py --memory [--clips 16 64 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from rank_sweep.eval.metrics import frechet_distance, fvd_from_features, kid_from_features
from rank_sweep.eval.stats import BootstrapSpec, paired_delta, replicate_table, run_interval


def _draw(rng: np.random.Generator, n: int, d: int, mu_a, mu_b, rho: float, scale_b: float):
    real = rng.standard_normal((n, d))
    z = rng.standard_normal((n, d))
    a = mu_a + z
    b = mu_b + scale_b * (rho * z + np.sqrt(1 - rho**2) * rng.standard_normal((n, d)))
    return real, a, b


def _kid(real, fake, n: int, seed: int) -> float:
    return kid_from_features(real, fake, subsets=20, subset_size=n // 2, seed=seed)[0]


def coverage(reps: int, n: int, d: int, n_boot: int, scale_b: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mu_a = np.zeros(d)
    mu_a[0] = 1.0  # FVD_A = 1.0
    mu_b = np.zeros(d)
    mu_b[1] = 0.8  # FVD_B = 0.64 (+ covariance term when scale_b != 1)
    rho = 0.9
    true_b = frechet_distance(mu_b, scale_b**2 * np.eye(d), np.zeros(d), np.eye(d))
    true_delta = 1.0 - true_b
    # The estimators' expectations at this N, by Monte Carlo (targets of the per-run CIs).
    mc = np.array(
        [
            [fvd_from_features(r, a), fvd_from_features(r, b), _kid(r, a, n, s), _kid(r, b, n, s)]
            for s, (r, a, b) in enumerate(
                _draw(rng, n, d, mu_a, mu_b, rho, scale_b) for _ in range(4 * reps)
            )
        ]
    )
    e_fa, e_fb, e_ka, e_kb = mc.mean(0)
    hits = {k: 0 for k in ("fvd_run", "fvd_paired", "fvd_paired_expected", "kid_run", "kid_paired")}
    widths = []
    for r in range(reps):
        real, a, b = _draw(rng, n, d, mu_a, mu_b, rho, scale_b)
        spec = BootstrapSpec(n_boot=n_boot, seed=seed + 1000 + r)
        fv = replicate_table("fvd", real, [a, b], spec)
        kv = replicate_table("kid", real, [a, b], spec)
        pa, pb = fvd_from_features(real, a), fvd_from_features(real, b)
        ka, kb = _kid(real, a, n, r), _kid(real, b, n, r)
        hits["fvd_run"] += run_interval(pa, fv[:, 0]).contains(e_fa)
        dint = paired_delta(pa, pb, fv[:, 0], fv[:, 1])
        hits["fvd_paired"] += dint.contains(true_delta)
        hits["fvd_paired_expected"] += dint.contains(e_fa - e_fb)
        widths.append(dint.hi - dint.lo)
        hits["kid_run"] += run_interval(ka, kv[:, 0]).contains(e_ka)
        hits["kid_paired"] += paired_delta(ka, kb, kv[:, 0], kv[:, 1]).contains(e_ka - e_kb)
    out = {k: v / reps for k, v in hits.items()}
    out.update(
        true_delta=true_delta,
        expected_delta=float(e_fa - e_fb),
        mean_paired_width=float(np.mean(widths)),
    )
    return out


def run_coverage(args: argparse.Namespace) -> dict:
    print(
        f"coverage simulation: {args.reps} repetitions, N={args.n} clips per side, d={args.d}, "
        f"{args.n_boot} bootstrap resamples, nominal 0.95"
    )
    results = {}
    for name, scale_b in (("mean shift (equal covariances)", 1.0), ("B wider covariance", 1.15)):
        t0 = time.perf_counter()
        c = coverage(args.reps, args.n, args.d, args.n_boot, scale_b, args.seed)
        results[name] = c
        print(f"\n[{name}]  true dFVD {c['true_delta']:.4f}, E[dFVD_hat] {c['expected_delta']:.4f}")
        print(f"  paired dFVD CI covers true dFVD:        {c['fvd_paired']:.3f}")
        print(f"  paired dFVD CI covers E[dFVD_hat]:      {c['fvd_paired_expected']:.3f}")
        print(f"  per-run FVD CI covers E[FVD_hat at N]:  {c['fvd_run']:.3f}")
        print(f"  paired dKID CI covers E[dKID_hat]:      {c['kid_paired']:.3f}")
        print(f"  per-run KID CI covers E[KID_hat]:       {c['kid_run']:.3f}")
        print(
            f"  mean paired dFVD CI width {c['mean_paired_width']:.4f}  ({time.perf_counter() - t0:.0f} s)"
        )
    main = results["mean shift (equal covariances)"]["fvd_paired"]
    ok = 0.90 <= main <= 0.98
    print(
        f"\npaired dFVD coverage at nominal 0.95: {main:.3f} (goal 0.90-0.98: {'ok' if ok else 'FAIL'})"
    )
    return results


# -- memory / time of the final tier ----------------------------------------------------------
MEM_OVERRIDES = [
    "data.synth.classes=4",
    "data.synth.videos_per_class=260",  # fold-1 test split: 65 clips per class -> 260
    "eval.num_real=16",  # fixed: the real side is part of the fixed cost
    "eval.final.batch_size=4",
    "eval.sample_steps=2",
    "eval.bootstrap=200",
    "eval.kid_subsets=10",
    "eval.kid_subset_size=16",
    "eval.log_videos=0",
    "eval.periodic.metrics=[]",
]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(n: int, state_dir: str) -> dict:
    """One final-tier eval of n generated clips; RSS sampled every 2 ms during it."""
    import threading
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _eval_script import compose, setup

    torch.set_num_threads(1)
    cfg = compose([*MEM_OVERRIDES, f"eval.num_fake={n}"])
    ev, transformer = setup(cfg, Path(state_dir), None, max_clips=n)
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    base = _rss_mb()
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    result = ev.evaluate(transformer, 1, final=True, out_dir=Path(state_dir) / "out")
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    peak[0] = max(peak[0], _rss_mb())
    d = cfg.data
    clip_bytes = ev.sample_frames * int(d.height) * int(d.width) * 3
    return {"n": n, "base_mb": base, "peak_mb": peak[0], "above_mb": peak[0] - base,
            "wall_s": wall, "clip_mb": clip_bytes / 2**20,
            "fvd": result.metrics["fvd/synthetic"]}  # fmt: skip


def run_memory(args: argparse.Namespace) -> list[dict]:
    import tempfile

    rows = []
    cache = tempfile.mkdtemp(prefix="bench_eval_cache_")
    env = {**os.environ, "RANK_SWEEP_CACHE": cache, "OMP_NUM_THREADS": "1"}
    print(f"\nfinal tier on the tiny model, batches of 4, one fresh process per N (cache {cache})")
    print(f"{'N':>5} {'RSS at start MB':>16} {'peak MB':>9} {'above start MB':>15} "
          f"{'per clip MB':>12} {'all clips MB':>13} {'wall s':>8} {'s/clip':>7}")  # fmt: skip
    for n in args.clips:
        with tempfile.TemporaryDirectory() as state:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), "--state", state],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"child N={n} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{n:>5} {r['base_mb']:>16.1f} {r['peak_mb']:>9.1f} {r['above_mb']:>15.2f} "
              f"{r['above_mb'] / n:>12.4f} {r['clip_mb'] * n:>13.2f} {r['wall_s']:>8.1f} "
              f"{r['wall_s'] / n:>7.3f}")  # fmt: skip
    first, last = rows[0], rows[-1]
    per_clip = (last["above_mb"] / last["n"]) / max(first["above_mb"] / first["n"], 1e-12)
    slope = (
        (last["above_mb"] - first["above_mb"]) / (last["n"] - first["n"]) if len(rows) > 1 else 0.0
    )
    print(
        f"memory/clip above the fixed cost, N={last['n']} vs N={first['n']}: x{per_clip:.3f} "
        f"(goal <= 1.2: {'ok' if per_clip <= 1.2 else 'FAIL'})"
    )
    print(
        f"growth per extra clip: {slope * 1024:.1f} KB (features, ~20 KB/clip in float64) vs "
        f"{first['clip_mb'] * 1024:.1f} KB per generated clip here and ~97 MB per 81x480x832 "
        f"clip at 14B; holding all clips would add {last['clip_mb'] * (last['n'] - first['n']):.1f} MB"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coverage", action="store_true")
    p.add_argument("--memory", action="store_true")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--state", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(memory_child(args.child, args.state)))
        return 0
    if not (args.coverage or args.memory):
        args.coverage = args.memory = True
    out = {}
    if args.coverage:
        out["coverage"] = run_coverage(args)
    if args.memory:
        out["memory"] = run_memory(args)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
