"""Intervals for FVD / KID and for paired run-vs-run differences (pure float64 functions).

Why not the percentile bootstrap: FVD and KID are biased estimators, and resampling clips
with replacement duplicates clips, which shrinks the effective sample and moves the whole
bootstrap distribution away from the point value (identical 400-d distributions at N=2048
gave FVD 220.8 with a percentile "CI" of [418, 436]; duplicated clips also break the
unbiased MMD of KID). So:

* The quantity an interval covers is the estimator's expectation at the protocol's sample
  size (FVD2048 *is* defined as the estimator at 2048 clips), not a bias-free population
  distance that no published FVD reports.
* Resampling is expressed as multinomial counts per clip. FVD uses count-weighted means
  and covariances; KID uses count-weighted U-statistics in which a clip is never paired
  with a copy of itself, so duplicates do not turn the unbiased MMD into a biased one.
* The interval is the basic ("reverse percentile") bootstrap about the bootstrap median:
  [point - (q_hi - median), point + (median - q_lo)]. It takes the spread (and skew) of the
  replicates but is centred on the point, so it always contains the value it is printed
  with, whatever the resampling bias. Coverage is checked by `benchmarks/bench_eval.py`.
* Pairing: every run generates clip i from the same first frame, prompt and noise, so one
  set of real-clip counts and one set of generated-clip-index counts is shared by every
  run. Replicates of all runs come from the same resamples; a difference of two columns is
  the paired bootstrap of the difference (most clip-level noise cancels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rank_sweep.eval.metrics import frechet_distance, polynomial_kernel, select_kid_frames

INTERVAL_METHOD = "bootstrap-basic-about-median(counts; clip-paired)"


@dataclass(frozen=True)
class Interval:
    point: float
    lo: float
    hi: float
    level: float = 0.95

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    @property
    def excludes_zero(self) -> bool:
        return not self.contains(0.0)


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] multinomial counts (each row sums to n): one bootstrap resample per row.

    Counts instead of index lists let the same resample be applied to every run's features
    (pairing) and keep KID's U-statistics free of self-pairs."""
    if n < 2 or n_boot < 2:
        raise ValueError(f"need n >= 2 clips and n_boot >= 2, got n={n}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def centred_interval(point: float, replicates: np.ndarray, level: float = 0.95) -> Interval:
    """Basic bootstrap interval about the replicates' median (see module doc); contains point."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if len(reps) < 2:
        raise ValueError("need >= 2 finite bootstrap replicates")
    a = (1.0 - level) / 2.0
    q_lo, med, q_hi = np.quantile(reps, [a, 0.5, 1.0 - a])
    return Interval(float(point), float(point - (q_hi - med)), float(point + (med - q_lo)), level)


# -- FVD -------------------------------------------------------------------------------------
def weighted_mean_cov(x: np.ndarray, w: np.ndarray, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of rows of x repeated w[i] times (w = counts, may be 0)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = w.sum()
    if n - ddof <= 0:
        raise ValueError(f"weighted covariance needs sum(w) > ddof, got {n} and {ddof}")
    mu = w @ x / n
    xc = x - mu
    cov = (xc * w[:, None]).T @ xc / (n - ddof)
    return mu, cov


def fvd_replicates(
    real: np.ndarray,
    fakes: list[np.ndarray],
    real_counts: np.ndarray,
    fake_counts: np.ndarray,
    ddof: int = 0,
) -> np.ndarray:
    """[n_boot, len(fakes)] FVD of each generated set against the real set under each
    resample. All generated sets share `fake_counts` (same clip indices: paired)."""
    n_fake = {len(f) for f in fakes}
    if len(n_fake) != 1 or fake_counts.shape[1] != n_fake.pop():
        raise ValueError("every generated set must have the same clips (paired): sizes differ")
    if real_counts.shape[1] != len(real) or len(real_counts) != len(fake_counts):
        raise ValueError("real_counts / fake_counts do not match the features")
    out = np.empty((len(real_counts), len(fakes)))
    for b in range(len(real_counts)):
        mr, sr = weighted_mean_cov(real, real_counts[b], ddof)
        for k, f in enumerate(fakes):
            out[b, k] = frechet_distance(mr, sr, *weighted_mean_cov(f, fake_counts[b], ddof))
    return out


# -- KID -------------------------------------------------------------------------------------
def one_frame_per_clip(x: np.ndarray, seed: int) -> np.ndarray:
    """[N, T, D] per-frame features -> [N, D], one frame per clip (see KID_FRAME_RULE)."""
    return select_kid_frames(x, seed)


def _within(k: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Mean of k over pairs of distinct clips, each clip weighted by its count: the
    U-statistic of a resample in which copies of a clip are never paired with each other."""
    diag = np.diagonal(k)
    num = np.einsum("bi,ij,bj->b", c, k, c) - (c * c) @ diag
    den = c.sum(1) ** 2 - (c * c).sum(1)
    # A resample holding a single distinct clip has no pair: NaN, dropped by the interval.
    return np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)


def _cross(k: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    return np.einsum("bi,ij,bj->b", cx, k, cy) / (cx.sum(1) * cy.sum(1))


def kid_replicates(
    real: np.ndarray,
    fakes: list[np.ndarray],
    real_counts: np.ndarray,
    fake_counts: np.ndarray,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
) -> np.ndarray:
    """[n_boot, len(fakes)] unbiased MMD^2 (KID kernel) of each generated set against the
    real set under each resample; inputs are [N, D] (one frame per clip)."""
    real = np.asarray(real, dtype=np.float64)
    g = 1.0 / real.shape[1] if gamma is None else float(gamma)
    rr = _within(polynomial_kernel(real, real, degree, g, coef), real_counts)
    out = np.empty((len(real_counts), len(fakes)))
    for k, f in enumerate(fakes):
        f = np.asarray(f, dtype=np.float64)
        ff = _within(polynomial_kernel(f, f, degree, g, coef), fake_counts)
        rf = _cross(polynomial_kernel(real, f, degree, g, coef), real_counts, fake_counts)
        out[:, k] = rr + ff - 2.0 * rf
    return out


# -- put together ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BootstrapSpec:
    n_boot: int = 200
    seed: int = 0
    level: float = 0.95
    ddof: int = 0


def replicate_table(
    metric: str,
    real: np.ndarray,
    fakes: list[np.ndarray],
    spec: BootstrapSpec,
) -> np.ndarray:
    """Replicates [n_boot, runs] of `metric` ("fvd" on clip features, "kid" on one frame per
    clip) with the same resamples for every run. The seed fixes the resamples, so two calls
    with the same runs pair exactly."""
    nr, nf = len(real), len(fakes[0])
    cr = resample_counts(nr, spec.n_boot, spec.seed)
    cf = resample_counts(nf, spec.n_boot, spec.seed + 1)
    if metric == "fvd":
        return fvd_replicates(real, fakes, cr, cf, spec.ddof)
    if metric in ("kid", "kvd"):  # per-frame [N, T, D] features: one frame per clip
        real = one_frame_per_clip(real, spec.seed)
        fakes = [one_frame_per_clip(f, spec.seed) for f in fakes]
        return kid_replicates(real, fakes, cr, cf)
    raise ValueError(f"no replicates for metric {metric!r}; allowed: fvd, kid, kvd")


def run_interval(point: float, reps: np.ndarray, level: float = 0.95) -> Interval:
    return centred_interval(point, reps, level)


def paired_delta(
    point_a: float, point_b: float, reps_a: np.ndarray, reps_b: np.ndarray, level: float = 0.95
) -> Interval:
    """Interval of a - b from replicates computed under the same resamples (paired)."""
    if np.shape(reps_a) != np.shape(reps_b):
        raise ValueError("paired replicates must come from the same resamples")
    return centred_interval(point_a - point_b, np.asarray(reps_a) - np.asarray(reps_b), level)
