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
    _real: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(EXTRA_METRICS))
        if unknown:
            raise ValueError(
                f"unknown extra metrics {unknown}; allowed: {', '.join(EXTRA_METRICS)}"
            )

    def prepare(self, eval_set: Any, n: int) -> None:
        """Encode the conditions/prompts and keep the real frames of the first n eval clips."""
        from rank_sweep.eval.detectors.clip import load_clip_text_image, load_wan_image_encoder
        from rank_sweep.eval.detectors.lpips import load_lpips

        items = [eval_set[i] for i in range(n)]
        if {"clipsim_img", "clipsim_temporal"} & set(self.metrics):
            self._img = load_wan_image_encoder(
                self.model_dir, pretrained=self.wan_clip_pretrained, device=self.device
            )
            firsts = torch.stack([it["first_frame"] for it in items])
            self._cond = self._img.embed(firsts)
        if "clipsim_text" in self.metrics:
            self._txt = load_clip_text_image(self.clip_path, device=self.device)
            self._text = self._txt.embed_text([str(it.get("caption") or "") for it in items])
        if "lpips" in self.metrics:
            self._lpips = load_lpips(self.lpips_path, self.lpips_net, device=self.device)
            self._real = np.stack([it["video"].numpy() for it in items])

    def _frame_emb(self, enc_embed: Any, clips: np.ndarray) -> np.ndarray:
        n, t = clips.shape[:2]
        flat = enc_embed(clips.reshape(n * t, *clips.shape[2:]))
        return flat.reshape(n, t, -1)

    def score(self, fake: np.ndarray) -> ExtraResult:
        """fake: uint8 [N, T, H, W, 3] generated from eval clips 0..N-1 (same order)."""
        per: dict[str, np.ndarray] = {}
        if self._img is not None:
            emb = self._frame_emb(self._img.embed, fake)
            if "clipsim_img" in self.metrics:
                per["clipsim_img"] = clipsim_img(emb, self._cond[: len(fake)])
            if "clipsim_temporal" in self.metrics:
                per["clipsim_temporal"] = clipsim_temporal(emb)
        if self._txt is not None:
            emb = self._frame_emb(self._txt.embed_images, fake)
            per["clipsim_text"] = clipsim_text(emb, self._text[: len(fake)])
        if self._lpips is not None:
            t = min(fake.shape[1], self._real.shape[1])
            real = self._real[: len(fake), 1:t]
            gen = fake[:, 1:t]
            if real.shape[2:4] != gen.shape[2:4]:
                raise ValueError(f"LPIPS: generated {gen.shape[2:4]} vs real {real.shape[2:4]}")
            n, tt = gen.shape[:2]
            d = self._lpips.distance(
                torch.from_numpy(np.ascontiguousarray(gen.reshape(n * tt, *gen.shape[2:]))),
                torch.from_numpy(np.ascontiguousarray(real.reshape(n * tt, *real.shape[2:]))),
            )
            per["lpips"] = d.numpy().reshape(n, tt).mean(axis=1)
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
            stamp=self.stamp(len(fake)),
        )

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
