"""Metric math against independent references (scipy sqrtm, nuclear norm, torchmetrics)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.fft
import scipy.linalg
import torch

from rank_sweep.eval.metrics import (
    StreamingStats,
    effective_subset_size,
    frechet_distance,
    fvd_from_features,
    kid_from_features,
    mean_cov,
)


def _spd(d: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * rng.uniform(lo, hi, d)) @ q.T


def _sqrtm_reference(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real
    )


def _well_conditioned(d: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.normal(size=d), _spd(d, 0.5, 2.0, rng), rng.normal(size=d), _spd(d, 0.2, 3.0, rng)


def test_frechet_matches_sqrtm_d400() -> None:
    args = _well_conditioned(400, 0)
    ours, ref = frechet_distance(*args), _sqrtm_reference(*args)
    assert ours > 100  # a real distance, so the relative check is meaningful
    assert abs(ours - ref) / ref < 1e-8


@pytest.mark.slow  # scipy sqrtm alone takes ~8 s at d=2048 on 2 cores
def test_frechet_matches_sqrtm_d2048() -> None:
    args = _well_conditioned(2048, 1)
    ours, ref = frechet_distance(*args), _sqrtm_reference(*args)
    assert abs(ours - ref) / ref < 1e-8


def test_frechet_d2048_commuting_closed_form() -> None:
    # Fast tier stand-in for the sqrtm check at 2048: shared eigenvectors make
    # tr((S1 S2)^1/2) = sum sqrt(l1 * l2) exactly.
    rng = np.random.default_rng(2)
    d = 2048
    q = scipy.fft.dct(np.eye(d), norm="ortho", axis=0)  # orthogonal, far cheaper than a QR
    l1, l2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.2, 3.0, d)
    s1, s2 = (q * l1) @ q.T, (q * l2) @ q.T
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    ref = np.sum((mu1 - mu2) ** 2) + l1.sum() + l2.sum() - 2 * np.sqrt(l1 * l2).sum()
    assert abs(frechet_distance(mu1, s1, mu2, s2) - ref) / ref < 1e-8


def test_frechet_fewer_samples_than_dims() -> None:
    # N < d: S1 is singular (Cholesky fails -> eigh path). Reference: with centered A, B,
    # tr((S1 S2)^1/2) = ||A B^T||_* / sqrt((n-1)(m-1)) (singular values of a small matrix).
    rng = np.random.default_rng(3)
    d, n, m = 300, 40, 50
    a = rng.normal(size=(n, d)) + 0.3
    b = rng.normal(size=(m, d)) * 1.2
    ac, bc = a - a.mean(0), b - b.mean(0)
    tr_sqrt = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    ours = fvd_from_features(a, b, ddof=1)
    assert ours >= 0
    assert abs(ours - ref) / ref < 1e-8
    # ddof=0 (StyleGAN-V, the default) scales both covariances by (n-1)/n and (m-1)/m.
    s1b, s2b = s1 * (n - 1) / n, s2 * (m - 1) / m
    ref0 = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1b) + np.trace(s2b)
    ref0 -= 2 * np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt(n * m)
    assert fvd_from_features(a, b) == pytest.approx(ref0, rel=1e-8)
    assert fvd_from_features(a, b) != pytest.approx(ours, rel=1e-4)
    # Same features each side with N < d: exactly zero in math, never negative here.
    same = fvd_from_features(a, a)
    assert 0.0 <= same < 1e-8 * np.trace(s1)
    # float32 features are widened before any statistics, so the result is the same.
    assert fvd_from_features(a.astype(np.float32), b.astype(np.float32)) >= 0


def test_identical_sets_fvd_zero() -> None:
    x = np.random.default_rng(4).normal(size=(500, 64))
    assert 0.0 <= fvd_from_features(x, x) < 1e-9
    assert fvd_from_features(x, x + 1.0) == pytest.approx(64.0, rel=1e-10)  # pure mean shift


def test_frechet_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes must agree"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def _independent_mmd(x: np.ndarray, y: np.ndarray) -> float:
    # Explicit pair loops over i != j, kernel (x.y/d + 1)^3 (the KID definition).
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda u, v: (float(u @ v) / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_whole_sets_equals_unbiased_mmd() -> None:
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) * 1.3 + 0.2
    mean, std = kid_from_features(real, fake, subsets=3, subset_size=30)
    assert mean == pytest.approx(_independent_mmd(fake, real), rel=1e-10)
    assert std < 1e-12  # every subset is the whole set, permuted


def test_kid_reduces_subset_size_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert effective_subset_size(50, 40, 1000) == 40
    assert "reduced from 1000 to 40" in caplog.text
    assert effective_subset_size(5000, 4000, 1000) == 1000
    with pytest.raises(ValueError, match=">= 2"):
        effective_subset_size(1, 10, 1000)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_matches_torchmetrics() -> None:
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(6)
    d, n = 32, 400
    real = rng.normal(size=(n, d))
    fake = rng.normal(size=(n, d)) * 1.2 + 0.15
    feats = torch.from_numpy(np.concatenate([real, fake]))

    class Lookup(torch.nn.Module):
        """Feature 'network' returning precomputed rows, indexed by the input."""

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return feats[idx.long()]

    subsets, size = 100, 100
    torch.manual_seed(0)
    tm = KernelInceptionDistance(feature=Lookup(), subsets=subsets, subset_size=size)
    tm.update(torch.arange(n), real=True)
    tm.update(torch.arange(n, 2 * n), real=False)
    tm_mean, tm_std = (float(v) for v in tm.compute())
    mean, std = kid_from_features(real, fake, subsets=subsets, subset_size=size, seed=0)
    assert mean > 5 * std / np.sqrt(subsets)  # a detectable difference, not noise around 0
    noise = np.sqrt((std**2 + tm_std**2) / subsets)  # std error of the difference of means
    assert abs(mean - tm_mean) < 4 * noise
    assert std == pytest.approx(tm_std, rel=0.3)


def test_streaming_stats_match_batch() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1000, 16)) * 3 + 100.0  # offset stresses the merge's cancellation
    stats = StreamingStats()
    for chunk in np.array_split(x, [3, 10, 400, 401, 999]):
        stats.update(chunk)
    mu, cov = mean_cov(x)
    assert stats.n == 1000
    np.testing.assert_allclose(stats.mean, mu, rtol=1e-13)
    np.testing.assert_allclose(stats.cov, cov, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=">= 2 samples"):
        StreamingStats().cov  # noqa: B018


def test_streaming_stats_ddof() -> None:
    x = np.random.default_rng(9).normal(size=(50, 3))
    for ddof in (0, 1):
        st = StreamingStats(ddof=ddof)
        st.update(x[:20])
        st.update(x[20:])
        np.testing.assert_allclose(st.cov, np.cov(x, rowvar=False, ddof=ddof), rtol=1e-12)
    with pytest.raises(ValueError, match="ddof"):
        StreamingStats(ddof=2)


def test_kid_takes_one_frame_per_clip() -> None:
    # Identical clip distributions whose 16 frames are near copies of each other: treating
    # frames as samples pairs near-duplicates inside the unbiased MMD and inflates it; one
    # frame per clip per subset keeps KID ~ 0.
    rng = np.random.default_rng(10)
    d, n, t = 16, 300, 8

    def clips() -> np.ndarray:
        base = rng.normal(size=(n, 1, d))
        return base + 0.05 * rng.normal(size=(n, t, d))

    real, fake = clips(), clips()
    kid, _ = kid_from_features(real, fake, subsets=10, subset_size=300, seed=0)
    flat, _ = kid_from_features(
        real.reshape(-1, d), fake.reshape(-1, d), subsets=10, subset_size=1000, seed=0
    )
    assert abs(kid) < 0.01  # measured 0.0033
    assert flat > 0.03 and flat > 5 * abs(kid)  # measured 0.048
    # [N, D] input is the T = 1 case, with the same random stream as before.
    a, b = rng.normal(size=(40, d)), rng.normal(size=(40, d))
    assert kid_from_features(a, b, 5, 20, seed=3) == kid_from_features(
        a[:, None], b[:, None], 5, 20, seed=3
    )
