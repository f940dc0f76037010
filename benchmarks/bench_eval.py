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
    args = p.parse_args(argv)
    if not (args.coverage or args.memory):
        args.coverage = args.memory = True
    out = {}
    if args.coverage:
        out["coverage"] = run_coverage(args)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
