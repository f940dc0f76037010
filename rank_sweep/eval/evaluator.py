"""Periodic evaluation during training: sample I2V clips from held-out first frames with the
job's current weights, extract detector features, score FVD/KID against cached real
features, and stamp the protocol.

Conditioning (text, CLIP image embedding, first-frame latent) for the evaluation clips is
computed once in `prepare()`, while the encoders are loaded, so training runs without them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # fvd/<dataset>, kid/<dataset>, ... (+ CI keys at the final eval)
    stamp: dict[str, str]  # protocol stamp
    videos: list[Path] = field(default_factory=list)  # sample mp4s written this eval


class _FirstFrames(torch.utils.data.Dataset):
    """The eval clips cut to the detector's frame count (real side of the comparison)."""

    def __init__(self, base: Any, frames: int) -> None:
        self.base, self.frames = base, frames

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        item["video"] = item["video"][: self.frames]
        return item


class Evaluator:
    def __init__(self, cfg: DictConfig, spec: Any, eval_set: Any, device: torch.device) -> None:
        self.cfg, self.spec, self.eval_set, self.device = cfg, spec, eval_set, device
        self.ecfg = cfg.eval
        self.dataset_name = str(cfg.data.name)
        self.sample_frames = int(self.ecfg.sample_frames or cfg.data.frames)
        self.n_real = min(int(self.ecfg.num_real), len(eval_set))
        self.n_fake = min(int(self.ecfg.num_fake), len(eval_set))
        if self.n_real < int(self.ecfg.num_real) or self.n_fake < int(self.ecfg.num_fake):
            log.warning(
                "eval split has %d clips: using %d real / %d generated (asked %d / %d); stamped",
                len(eval_set), self.n_real, self.n_fake, self.ecfg.num_real, self.ecfg.num_fake,
            )  # fmt: skip
        self.detectors: dict[str, Any] = {}
        self.real: dict[str, np.ndarray] = {}
        self.conditioning: list[dict[str, torch.Tensor]] = []

    # -- once per job -----------------------------------------------------------------------
    def prepare(self) -> None:
        from rank_sweep.eval.detectors.loaders import load_frame_detector, load_video_detector
        from rank_sweep.eval.real_stats import real_features, real_stats_key

        metrics = set(self.ecfg.metrics)
        size = int(self.ecfg.detector_size)
        if metrics & {"fvd", "kvd"}:
            from rank_sweep.world import resolve_detector_path  # i3d_path=world

            i3d = resolve_detector_path(self.ecfg.i3d_path, self.cfg.model)
            self.detectors["video"] = load_video_detector(i3d, size=size)
        if "kid" in metrics:
            self.detectors["frame"] = load_frame_detector(
                self.ecfg.inception_path, size=int(self.ecfg.inception_size)
            )
        real_view = _FirstFrames(self.eval_set, int(self.ecfg.frames))
        for kind, det in self.detectors.items():
            key = real_stats_key(
                dataset=self.eval_set.fingerprint(),
                frames=int(self.ecfg.frames),
                detector=det.sha256,
                size=det.size,
                n=self.n_real,
            )
            self.real[kind] = real_features(real_view, det, num_clips=self.n_real, key=key)
        self.conditioning = self._encode_conditioning()

    def _encode_conditioning(self) -> list[dict[str, torch.Tensor]]:
        """Text/image embeddings and the first-frame condition of each eval clip: the same
        entries the latent precompute writes, so they are cached once for a whole sweep."""
        from torch.utils.data import Subset

        from rank_sweep.model.precompute import cache_key, precompute
        from rank_sweep.paths import cache_dir

        es, d = self.eval_set, self.cfg.data
        key = cache_key(self.spec.path, es.fingerprint(), self.sample_frames, d.height, d.width)
        entries = precompute(
            self.spec, Subset(es, range(self.n_fake)), cache_dir() / "latents" / key,
            desc="eval conditioning",
        )  # fmt: skip
        neg = self.spec.encode_prompts([""]).cpu() if float(self.ecfg.guidance_scale) > 1 else None
        out = []
        for entry in entries:
            cond = {
                k: entry[src][None]
                for k, src in (("cond", "cond"), ("text", "text_emb"), ("image", "image_emb"))
            }
            if neg is not None:
                cond["neg"] = neg
            out.append(cond)
        return out

    # -- at each eval -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, transformer: Any) -> np.ndarray:
        """uint8 [N, T, H, W, 3] generated from the held-out first frames."""
        from rank_sweep.eval.sample import sample_from_conditioning

        clips = []
        for i, cond in enumerate(tqdm(self.conditioning, desc="eval sampling", leave=False)):
            video = sample_from_conditioning(
                self.spec,
                transformer,
                cond,
                num_frames=self.sample_frames,
                steps=int(self.ecfg.sample_steps),
                guidance_scale=float(self.ecfg.guidance_scale),
                seed=int(self.ecfg.seed) + i,  # the same noise for every rank
            )
            clips.append(video[0].cpu().numpy())
        return np.stack(clips)

    def evaluate(self, transformer: Any, step: int, *, final: bool, out_dir: Path) -> EvalResult:
        from rank_sweep.data.video import write_video
        from rank_sweep.eval.scoring import protocol_stamp, score

        fake_clips = self.generate(transformer)
        detector_frames = fake_clips[:, : int(self.ecfg.frames)]
        fake = {kind: det.features(detector_frames) for kind, det in self.detectors.items()}
        scores = score(
            self.real,
            fake,
            metrics=list(self.ecfg.metrics),
            kid_subsets=int(self.ecfg.kid_subsets),
            kid_subset_size=int(self.ecfg.kid_subset_size),
            seed=int(self.ecfg.seed),
            bootstrap=int(self.ecfg.bootstrap) if final else 0,
        )
        name = self.dataset_name
        metrics = {
            f"{k}/{name}": float(v) for k, v in scores.items() if k != "kid_subset_size_used"
        }
        stamp = protocol_stamp(
            self.detectors.get("video"),
            self.detectors.get("frame"),
            n_real=self.n_real,
            n_fake=self.n_fake,
            frames=int(self.ecfg.frames),
            resolution=f"{self.cfg.data.height}x{self.cfg.data.width}->{self.ecfg.detector_size}",
            dataset=name,
            split=str(self.cfg.data.eval_split),
            sample_steps=int(self.ecfg.sample_steps),
            seed=int(self.ecfg.seed),
            kid_subset_size=int(scores.get("kid_subset_size_used", self.ecfg.kid_subset_size)),
        )
        from rank_sweep.world import world_stamp  # which embedded world (if any) was measured

        stamp.update(world_stamp(self.cfg.model))
        videos = []
        sample_dir = out_dir / "samples"
        sample_dir.mkdir(parents=True, exist_ok=True)
        fps = float(self.cfg.data.fps or 16)
        for i in range(min(int(self.ecfg.log_videos), len(fake_clips))):
            path = sample_dir / f"step{step:06d}_clip{i}.mp4"
            write_video(path, fake_clips[i], fps=fps)
            videos.append(path)
        log.info(
            "eval @%d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if "/" in k)
        )
        return EvalResult(metrics=metrics, stamp=stamp, videos=videos)
