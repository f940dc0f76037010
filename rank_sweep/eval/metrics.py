"""FVD / KID / KVD as pure float64 numpy functions, plus streaming moments.

Intervals live in `stats.py` (the percentile bootstrap that used to be here does not
contain its own point value for these biased estimators).

Frechet distance: d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).
The trace term never needs a matrix square root: with S1 = L L^T (Cholesky), S1 S2 is
similar to the symmetric PSD matrix L^T S2 L, so tr((S1 S2)^{1/2}) is the sum of square
roots of its eigenvalues (eigvalsh). A singular S1 (fewer clips than feature dims) has no
Cholesky factor; then S1^{1/2} from eigh gives the same similarity with S1^{1/2} S2 S1^{1/2}.
Both are exact up to rounding, ~5-15x faster than scipy.linalg.sqrtm at d=2048, and stay
real (sqrtm of a non-symmetric product drifts complex and its `disp=` is gone in scipy 1.18).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _as64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _sym(a: np.ndarray) -> np.ndarray:
    # Covariances are symmetric in exact arithmetic; rounding makes eigvalsh's input ambiguous.
    return (a + a.T) * 0.5


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 (exact, via a similar symmetric matrix)."""
    s1, s2 = _sym(_as64(sigma1)), _sym(_as64(sigma2))
    try:
        chol = np.linalg.cholesky(s1)
        inner = chol.T @ s2 @ chol
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(s1)
        root = (v * np.sqrt(_zero_tiny(w))) @ v.T
        inner = root @ s2 @ root
    return float(np.sqrt(_zero_tiny(np.linalg.eigvalsh(_sym(inner)))).sum())


def _zero_tiny(ev: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix below rounding level are zeros. Clipping only negatives
    is not enough: with N < d the d - N null eigenvalues come out as +-1e-16 noise whose
    square roots (~1e-8 each) would add up to a visible bias in the trace term."""
    tol = max(float(ev.max(initial=0.0)), 0.0) * len(ev) * np.finfo(np.float64).eps
    return np.where(ev > tol, ev, 0.0)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); never negative."""
    mu1, mu2 = _as64(mu1).ravel(), _as64(mu2).ravel()
    s1, s2 = np.atleast_2d(_as64(sigma1)), np.atleast_2d(_as64(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"frechet_distance: shapes must agree, got mu {mu1.shape}/{mu2.shape}, "
            f"sigma {s1.shape}/{s2.shape}"
        )
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return float(max(value, 0.0))


def _check_features(real: np.ndarray, fake: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    real, fake = _as64(real), _as64(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"{what}: features must be [N, D] with the same D, got {real.shape} and {fake.shape}"
        )
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"{what}: need >= 2 samples each side, got {len(real)} and {len(fake)}")
    return real, fake


# StyleGAN-V's fvd2048_16f computes the covariance as (x^T x)/N - mu mu^T, i.e. biased
# (ddof=0); ddof is stamped with every value (`eval.cov_ddof`).
DEFAULT_DDOF = 0


def _check_ddof(ddof: int) -> int:
    if int(ddof) not in (0, 1):
        raise ValueError(f"covariance ddof must be 0 (StyleGAN-V) or 1 (unbiased), got {ddof}")
    return int(ddof)


def mean_cov(features: np.ndarray, ddof: int = DEFAULT_DDOF) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance in float64; ddof=0 as StyleGAN-V's FVD."""
    x = _as64(features)
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=_check_ddof(ddof))


def fvd_from_features(real: np.ndarray, fake: np.ndarray, ddof: int = DEFAULT_DDOF) -> float:
    """Frechet distance between Gaussians fitted to [N, D] feature sets (FVD on I3D logits)."""
    real, fake = _check_features(real, fake, "fvd_from_features")
    return frechet_distance(*mean_cov(real, ddof), *mean_cov(fake, ddof))


def effective_subset_size(n_real: int, n_fake: int, requested: int) -> int:
    """KID subset size actually usable: min(requested, n_real, n_fake), warned when reduced.

    The caller stamps the returned value, so a reduced size is never silent.
    """
    if requested < 2:
        raise ValueError(f"kid subset size must be >= 2, got {requested}")
    used = min(int(requested), int(n_real), int(n_fake))
    if used < 2:
        raise ValueError(f"KID needs >= 2 samples each side, got {n_real} real and {n_fake} fake")
    if used < requested:
        log.warning(
            "KID subset size reduced from %d to %d (%d real, %d fake samples); stamped",
            requested, used, n_real, n_fake,
        )  # fmt: skip
    return used


# Frames of one clip are strongly correlated: a KID sample holds at most one frame per clip.
# The evaluator, the eval CLI and the intervals all take the frame `kid_frame_index(seed, i,
# T)` of clip i (so only that frame goes through Inception); `kid_from_features` given
# [N, T, D] draws one frame per clip per subset instead.
KID_FRAME_RULE = "one-frame-per-clip(index=rng(seed,clip))"


def kid_frame_index(seed: int, clip: int, frames: int) -> int:
    """The frame of clip `clip` that enters KID: a pure function of (seed, clip), so it does
    not depend on batching, sharding or resumption."""
    return int(np.random.default_rng([int(seed), int(clip)]).integers(0, int(frames)))


def select_kid_frames(x: np.ndarray, seed: int) -> np.ndarray:
    """[N, T, D] per-frame features -> [N, D] under KID_FRAME_RULE; [N, D] unchanged."""
    x = _as64(x)
    if x.ndim == 2:
        return x
    if x.ndim != 3:
        raise ValueError(f"frame features must be [N, D] or [N, T, D], got {x.shape}")
    pick = [kid_frame_index(seed, i, x.shape[1]) for i in range(len(x))]
    return x[np.arange(len(x)), pick]


def _as_frames(x: np.ndarray) -> np.ndarray:
    """[N, D] -> [N, 1, D]; [N, T, D] unchanged (float64)."""
    x = _as64(x)
    if x.ndim == 2:
        return x[:, None, :]
    if x.ndim != 3:
        raise ValueError(f"KID features must be [N, D] or [N, T, D], got {x.shape}")
    return x


def _one_frame_each(x: np.ndarray, clips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if x.shape[1] == 1:  # clip-level features: no frame to draw (keeps the rng stream)
        return x[clips, 0]
    return x[clips, rng.integers(0, x.shape[1], len(clips))]


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef: float
) -> np.ndarray:
    return (gamma * (x @ y.T) + coef) ** degree


def unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2: within-set sums exclude the diagonal, the cross term keeps all pairs."""
    m, n = len(k_xx), len(k_yy)
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.sum() / (m * n))


def kid_from_features(
    real: np.ndarray,
    fake: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and (population) std of unbiased MMD^2 over random subsets, kernel
    (gamma x.y + coef)^degree with gamma = 1/d by default. subset_size larger than either
    set is reduced (see `effective_subset_size`).

    Per-frame features [N, T, D] are sampled as whole clips: a subset takes `subset_size`
    distinct clips and one random frame of each (KID_FRAME_RULE). Frames of one clip are
    strongly correlated; pairing two of them inside the unbiased MMD biases it upwards
    (identical distributions gave KID 0.040 with all 16 frames per clip, -6e-5 with one)."""
    real, fake = _as_frames(real), _as_frames(fake)
    _check_features(real[:, 0], fake[:, 0], "kid_from_features")
    if subsets < 1:
        raise ValueError(f"kid subsets must be >= 1, got {subsets}")
    m = effective_subset_size(len(real), len(fake), subset_size)
    g = 1.0 / real.shape[2] if gamma is None else float(gamma)
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets)
    for s in range(subsets):
        x = _one_frame_each(fake, rng.choice(len(fake), m, replace=False), rng)
        y = _one_frame_each(real, rng.choice(len(real), m, replace=False), rng)
        scores[s] = unbiased_mmd2(
            polynomial_kernel(x, x, degree, g, coef),
            polynomial_kernel(y, y, degree, g, coef),
            polynomial_kernel(x, y, degree, g, coef),
        )
    return float(scores.mean()), float(scores.std())


# KVD: the same KID estimator on I3D video features (optional metric).
kvd_from_features = kid_from_features


class StreamingStats:
    """Running float64 mean/covariance (Chan et al. pairwise merge), batch by batch, so the
    features of thousands of clips never need to be held at once; cov uses `ddof`."""

    def __init__(self, dim: int | None = None, ddof: int = DEFAULT_DDOF) -> None:
        self.n = 0
        self.ddof = _check_ddof(ddof)
        self._dim = dim
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def update(self, batch: np.ndarray) -> None:
        x = _as64(batch)
        x = x.reshape(-1, x.shape[-1])
        if self._dim is not None and x.shape[1] != self._dim:
            raise ValueError(f"StreamingStats: batch dim {x.shape[1]} != {self._dim}")
        nb = len(x)
        if nb == 0:
            return
        mb = x.mean(axis=0)
        xc = x - mb
        m2b = xc.T @ xc
        if self._mean is None:
            self._dim, self.n, self._mean, self._m2 = x.shape[1], nb, mb, m2b
            return
        delta = mb - self._mean
        n = self.n + nb
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + m2b + np.outer(delta, delta) * (self.n * nb / n)
        self.n = n

    @property
    def mean(self) -> np.ndarray:
        if self._mean is None:
            raise ValueError("StreamingStats: no samples yet")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        if self._m2 is None or self.n < 2:
            raise ValueError(f"StreamingStats: covariance needs >= 2 samples, have {self.n}")
        return self._m2 / (self.n - self.ddof)
