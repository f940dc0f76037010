"""CLIP-SIM (three forms) and LPIPS per generated clip, with intervals that pair across runs.

Each metric is a mean of per-clip values. Clip i of every run shares its first frame,
prompt and noise, so per-clip values pair across runs: the interval of a run's mean and
of a run-vs-run difference resample the SAME clip indices (`bootstrap_indices(n, B, seed)`),
like the FVD intervals. A mean is unbiased, so its percentile interval contains the point
value (asserted, not assumed).

- clipsim_img: mean over generated frames 1..T-1 of cos(CLIP(frame_t), CLIP(condition)).
- clipsim_temporal: mean over t of cos(CLIP(frame_t), CLIP(frame_{t+1})).
- clipsim_text: mean over frames of cos(CLIP_text(prompt), CLIP_image(frame_t)).
- lpips: mean over frames 1..T-1 of LPIPS(generated_t, real_t) of the same clip (frame 0 is
  the given condition, identical by construction on the real side).
Image-image forms use the Wan checkpoint's CLIP vision encoder; text uses eval.clip_path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

EXTRA_METRICS = ("clipsim_img", "clipsim_temporal", "clipsim_text", "lpips")
HIGHER_IS_BETTER = {"clipsim_img": True, "clipsim_temporal": True, "clipsim_text": True,
                    "lpips": False}  # fmt: skip


# -- pure functions ------------------------------------------------------------------------
def clipsim_img(frames: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """frames [N, T, D], cond [N, D] unit embeddings -> [N] (frames 1..T-1 vs condition)."""
    f = frames[:, 1:] if frames.shape[1] > 1 else frames
    return np.einsum("ntd,nd->nt", f, cond).mean(axis=1)


def clipsim_temporal(frames: np.ndarray) -> np.ndarray:
    """frames [N, T, D] unit embeddings -> [N] mean consecutive-frame cosine (T >= 2)."""
    if frames.shape[1] < 2:
        raise ValueError("clipsim_temporal needs at least 2 frames per clip")
    return np.einsum("ntd,ntd->nt", frames[:, :-1], frames[:, 1:]).mean(axis=1)


def clipsim_text(frames: np.ndarray, text: np.ndarray) -> np.ndarray:
    """frames [N, T, D] image embeddings, text [N, D] (same CLIP space) -> [N]."""
    return np.einsum("ntd,nd->nt", frames, text).mean(axis=1)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] clip indices; a pure function of (n, n_boot, seed), so every run (and a
    difference of two runs) resamples the same clips."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def mean_interval(
    values: np.ndarray, n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap of the mean over clips; (mean, nan, nan) if n<2."""
    v = np.asarray(values, dtype=np.float64)
    point = float(v.mean())
    if len(v) < 2 or n_boot < 2:
        return point, float("nan"), float("nan")
    means = v[bootstrap_indices(len(v), n_boot, seed)].mean(axis=1)
    a = (1.0 - level) / 2
    lo, hi = (float(x) for x in np.quantile(means, [a, 1 - a]))
    # The mean is unbiased and its bootstrap distribution centred on it; widen by float
    # rounding only, so the interval always contains its point value.
    return point, min(lo, point), max(hi, point)


def paired_interval(
    a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean difference a - b over paired clips with its interval (same indices as above)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal clip counts, got {a.shape} vs {b.shape}")
    return mean_interval(a - b, n_boot, seed, level)


# -- the evaluator part --------------------------------------------------------------------
@dataclass
class ExtraResult:
    metrics: dict[str, float]  # <m>/<ds>, <m>_ci_lo/<ds>, <m>_ci_hi/<ds>
    per_clip: dict[str, list[float]]  # <m> -> value of clip i (pairs across runs)
    stamp: dict[str, str]


@dataclass
class ExtraMetrics:
    """Loads what the chosen metrics need once; scores generated clips at each eval."""

    metrics: list[str]
    dataset: str
    model_dir: Path
    wan_clip_pretrained: bool
    clip_path: str | None = None
    lpips_path: str | None = None
    lpips_net: str = "alex"
    bootstrap: int = 200
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _img: Any = field(default=None, repr=False)
    _txt: Any = field(default=None, repr=False)
    _lpips: Any = field(default=None, repr=False)
    _cond: np.ndarray | None = field(default=None, repr=False)
    _text: np.ndarray | None = field(default=None, repr=False)
    _eval_set: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(EXTRA_METRICS))
        if unknown:
            raise ValueError(
                f"unknown extra metrics {unknown}; allowed: {', '.join(EXTRA_METRICS)}"
            )

    def prepare(self, eval_set: Any, n: int) -> None:
        """Load the detectors and encode the first frames / prompts of eval clips 0..n-1.
        Real frames for LPIPS are read clip by clip at scoring time (never all in memory)."""
        from rank_sweep.eval.detectors.clip import load_clip_text_image, load_wan_image_encoder
        from rank_sweep.eval.detectors.lpips import load_lpips

        self._eval_set = eval_set
        firsts, captions = [], []
        for i in range(n):
            item = eval_set[i]
            firsts.append(item["first_frame"])
            captions.append(str(item.get("caption") or ""))
        if {"clipsim_img", "clipsim_temporal"} & set(self.metrics):
            self._img = load_wan_image_encoder(
                self.model_dir, pretrained=self.wan_clip_pretrained, device=self.device
            )
            self._cond = self._img.embed(torch.stack(firsts))
        if "clipsim_text" in self.metrics:
            self._txt = load_clip_text_image(self.clip_path, device=self.device)
            self._text = self._txt.embed_text(captions)
        if "lpips" in self.metrics:
            self._lpips = load_lpips(self.lpips_path, self.lpips_net, device=self.device)

    def score_clip(self, i: int, clip: np.ndarray) -> dict[str, float]:
        """Per-clip values of generated clip i (uint8 [T, H, W, 3], from eval clip i): the
        unit a batched or sharded evaluator feeds; `summarize` turns them into metrics."""
        out: dict[str, float] = {}
        if self._img is not None:
            emb = self._img.embed(clip)[None]
            if "clipsim_img" in self.metrics:
                out["clipsim_img"] = float(clipsim_img(emb, self._cond[i : i + 1])[0])
            if "clipsim_temporal" in self.metrics:
                out["clipsim_temporal"] = float(clipsim_temporal(emb)[0])
        if self._txt is not None:
            emb = self._txt.embed_images(clip)[None]
            out["clipsim_text"] = float(clipsim_text(emb, self._text[i : i + 1])[0])
        if self._lpips is not None:
            real = np.asarray(self._eval_set[i]["video"])
            t = min(len(clip), len(real))
            if real.shape[1:3] != clip.shape[1:3]:
                raise ValueError(f"LPIPS: generated {clip.shape[1:3]} vs real {real.shape[1:3]}")
            d = self._lpips.distance(
                torch.from_numpy(np.ascontiguousarray(clip[1:t])),
                torch.from_numpy(np.ascontiguousarray(real[1:t])),
            )
            out["lpips"] = float(d.mean())
        return out

    def summarize(self, per_clip: list[dict[str, float]]) -> ExtraResult:
        """Means with intervals from per-clip values in clip order 0..N-1."""
        names = [m for m in EXTRA_METRICS if per_clip and m in per_clip[0]]
        per = {m: np.array([c[m] for c in per_clip], dtype=np.float64) for m in names}
        metrics: dict[str, float] = {}
        for name, values in per.items():
            point, lo, hi = mean_interval(values, self.bootstrap, self.seed)
            metrics[f"{name}/{self.dataset}"] = point
            if np.isfinite(lo):
                metrics[f"{name}_ci_lo/{self.dataset}"] = lo
                metrics[f"{name}_ci_hi/{self.dataset}"] = hi
        return ExtraResult(
            metrics=metrics,
            per_clip={k: [float(x) for x in v] for k, v in per.items()},
            stamp=self.stamp(len(per_clip)),
        )

    def score(self, fake: np.ndarray) -> ExtraResult:
        """fake: uint8 [N, T, H, W, 3] generated from eval clips 0..N-1 (same order)."""
        return self.summarize([self.score_clip(i, clip) for i, clip in enumerate(fake)])

    def stamp(self, n: int) -> dict[str, str]:
        """Flat protocol fields (logged under protocol.<ds>.extra.*)."""
        s: dict[str, str] = {"extra.n_clips": str(n), "extra.interval": "percentile bootstrap "
                             f"of the clip mean, shared indices (B={self.bootstrap}, seed "
                             f"{self.seed})"}  # fmt: skip
        if self._img is not None:
            s.update({"extra.clip_image.sha256": self._img.sha256,
                      "extra.clip_image.output": self._img.name,
                      "extra.clip_image.pretrained": str(self._img.pretrained).lower()})  # fmt: skip
        if self._txt is not None:
            s.update({"extra.clip_text.sha256": self._txt.sha256,
                      "extra.clip_text.pretrained": str(self._txt.pretrained).lower()})  # fmt: skip
        if self._lpips is not None:
            s.update({"extra.lpips.net": self._lpips.net, "extra.lpips.sha256": self._lpips.sha256,
                      "extra.lpips.pretrained": str(self._lpips.pretrained).lower(),
                      "extra.lpips.frames": "1..T-1 vs the real clip"})  # fmt: skip
        return s

    @property
    def pretrained(self) -> bool:
        dets = [d for d in (self._img, self._txt, self._lpips) if d is not None]
        return all(bool(d.pretrained) for d in dets)


def build_extra(cfg: Any, spec: Any, eval_set: Any, n: int, device: Any) -> ExtraMetrics | None:
    """The evaluator's hook: ExtraMetrics prepared on the first n eval clips, or None when
    `eval.extra_metrics` is empty. The Wan CLIP encoder counts as pretrained only for a
    real checkpoint (`model.path` set); the tiny model's is random-init."""
    names = list(cfg.eval.get("extra_metrics") or [])
    if not names:
        return None
    extra = ExtraMetrics(
        metrics=names,
        dataset=str(cfg.data.name),
        model_dir=Path(spec.path),
        wan_clip_pretrained=cfg.model.path is not None,
        clip_path=cfg.eval.get("clip_path"),
        lpips_path=cfg.eval.get("lpips_path"),
        lpips_net=str(cfg.eval.get("lpips_net") or "alex"),
        bootstrap=int(cfg.eval.bootstrap),
        seed=int(cfg.eval.seed),
        device=torch.device(device),
    )
    extra.prepare(eval_set, n)
    return extra
