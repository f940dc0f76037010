"""Intervals of eval/stats.py: they contain their point, resample clips as counts, pair
runs on the same clip indices, and cover their target in a small simulation."""

from __future__ import annotations

import numpy as np
import pytest

from rank_sweep.eval.metrics import fvd_from_features, polynomial_kernel, unbiased_mmd2
from rank_sweep.eval.stats import (
    BootstrapSpec,
    centred_interval,
    fvd_replicates,
    kid_replicates,
    one_frame_per_clip,
    paired_delta,
    replicate_table,
    resample_counts,
    run_interval,
    weighted_mean_cov,
)


def test_interval_contains_point_even_for_biased_replicates() -> None:
    # The failure: replicates far above the point (resampling bias).
    reps = np.random.default_rng(0).normal(427.0, 4.5, 200)
    ci = centred_interval(220.8, reps)
    assert ci.lo <= 220.8 <= ci.hi
    assert ci.hi - ci.lo == pytest.approx(np.subtract(*np.quantile(reps, [0.975, 0.025])))
    with pytest.raises(ValueError, match="level"):
        centred_interval(1.0, reps, level=1.5)


def test_identical_distributions_fvd_interval_contains_point() -> None:
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(300, 40)), rng.normal(size=(300, 40))
    point = fvd_from_features(real, fake)
    reps = replicate_table("fvd", real, [fake], BootstrapSpec(n_boot=50, seed=0))[:, 0]
    assert np.median(reps) > point  # duplicated clips inflate FVD: the old percentile CI missed
    ci = run_interval(point, reps)
    assert ci.contains(point)


def test_counts_equal_repeated_rows() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 3))
    w = resample_counts(12, 3, seed=5)
    assert (w.sum(1) == 12).all()
    for row in w:
        rep = np.repeat(x, row.astype(int), axis=0)
        for ddof in (0, 1):
            mu, cov = weighted_mean_cov(x, row, ddof)
            np.testing.assert_allclose(mu, rep.mean(0), rtol=1e-12)
            np.testing.assert_allclose(cov, np.cov(rep, rowvar=False, ddof=ddof), atol=1e-12)
    np.testing.assert_array_equal(w, resample_counts(12, 3, seed=5))  # seeded


def test_replicates_at_unit_counts_are_the_point_values() -> None:
    rng = np.random.default_rng(3)
    real, a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.3, rng.normal(size=(30, 5))
    ones = np.ones((2, 30))
    fv = fvd_replicates(real, [a, b], ones, ones)
    assert fv[0, 0] == pytest.approx(fvd_from_features(real, a), rel=1e-10)
    kv = kid_replicates(real, [a, b], ones, ones)
    g = 1.0 / 5
    k = lambda x, y: polynomial_kernel(x, y, 3, g, 1.0)  # noqa: E731
    assert kv[0, 1] == pytest.approx(unbiased_mmd2(k(b, b), k(real, real), k(b, real)), rel=1e-10)


def test_kid_replicate_never_pairs_a_clip_with_its_copy() -> None:
    # Resample with duplicates: the U-statistic over pairs of distinct original clips.
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    cr = resample_counts(8, 2, seed=1)[:1]
    cf = resample_counts(8, 2, seed=2)[:1]
    got = kid_replicates(real, [fake], cr, cf)[0, 0]
    ir = np.repeat(np.arange(8), cr[0].astype(int))
    jf = np.repeat(np.arange(8), cf[0].astype(int))
    k = lambda u, v: (u @ v / 3 + 1.0) ** 3  # noqa: E731

    def within(x, idx):
        vals = [k(x[i], x[j]) for p, i in enumerate(idx) for q, j in enumerate(idx) if i != j]
        return np.mean(vals)

    cross = np.mean([k(real[i], fake[j]) for i in ir for j in jf])
    assert got == pytest.approx(within(real, ir) + within(fake, jf) - 2 * cross, rel=1e-10)


def test_paired_delta_same_run_is_exactly_zero_and_pairing_narrows() -> None:
    rng = np.random.default_rng(5)
    n, d = 200, 8
    real, z = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    a = z + 0.5
    b = 0.95 * z + np.sqrt(1 - 0.95**2) * rng.normal(size=(n, d)) + 0.4
    spec = BootstrapSpec(n_boot=100, seed=0)
    reps = replicate_table("fvd", real, [a, b, a], spec)
    pa, pb = fvd_from_features(real, a), fvd_from_features(real, b)
    same = paired_delta(pa, pa, reps[:, 0], reps[:, 2])
    assert same.lo == same.hi == 0.0
    paired = paired_delta(pa, pb, reps[:, 0], reps[:, 1])
    assert paired.contains(pa - pb)
    # Unpaired: resample b's clips independently of a's.
    other = replicate_table("fvd", real, [b], BootstrapSpec(n_boot=100, seed=7))[:, 0]
    unpaired = centred_interval(pa - pb, reps[:, 0] - other)
    assert paired.hi - paired.lo < 0.6 * (unpaired.hi - unpaired.lo)
    with pytest.raises(ValueError, match="same resamples"):
        paired_delta(pa, pb, reps[:, 0], reps[:50, 1])


def test_one_frame_per_clip_and_bad_inputs() -> None:
    x = np.arange(4 * 3 * 2, dtype=float).reshape(4, 3, 2)
    picked = one_frame_per_clip(x, seed=0)
    assert picked.shape == (4, 2)
    for i in range(4):
        assert any((picked[i] == x[i, t]).all() for t in range(3))
    with pytest.raises(ValueError, match="same clips"):
        replicate_table("fvd", x[:, 0], [x[:, 0], x[:3, 0]], BootstrapSpec(n_boot=4))
    with pytest.raises(ValueError, match="allowed"):
        replicate_table("fid", x[:, 0], [x[:, 0]], BootstrapSpec(n_boot=4))


def test_paired_coverage_small_simulation() -> None:
    # 60 repetitions of a known dFVD (equal covariances: bias cancels); nominal 0.95.
    rng = np.random.default_rng(6)
    n, d, hits = 120, 4, 0
    mu_a, mu_b = np.array([0.6, 0, 0, 0]), np.array([0, 0.4, 0, 0])
    for r in range(60):
        real, z = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        a = mu_a + z
        b = mu_b + 0.9 * z + np.sqrt(0.19) * rng.normal(size=(n, d))
        reps = replicate_table("fvd", real, [a, b], BootstrapSpec(n_boot=100, seed=r))
        pa, pb = fvd_from_features(real, a), fvd_from_features(real, b)
        hits += paired_delta(pa, pb, reps[:, 0], reps[:, 1]).contains(0.36 - 0.16)
    assert 0.85 <= hits / 60 <= 1.0
