"""The job's evaluation: the periodic tier at every eval step, the final tier at the end.

`evaluate(model, step, final=...)` runs the periodic tier (light FVD/KID on the validation
slice, when configured; the validation loss itself comes from the training loop) and, at
the end of a completed run, the final tier: the full protocol on `data.eval_split`, with
intervals, generated batch by batch (eval/generation.py), sharded over the data-parallel
ranks, resumable per batch, and the generated features saved as an artifact so the report
can pair runs clip by clip. Metric names and settings per tier: eval/tiers.py.

Conditioning (text, CLIP image embedding, first-frame latent) of every evaluation clip is
precomputed once in `prepare()` while the encoders are loaded, into the sweep-wide cache,
and read back per batch (never all clips at once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from rank_sweep.eval.tiers import (
    FEATURES_ARTIFACT_DIR,
    FINAL,
    GEN_FEATURES_FILE,
    TierSettings,
    final_settings,
    periodic_settings,
    val_split,
)
from rank_sweep.track import contract as C

log = logging.getLogger(__name__)

# Generation is split over the job's data-parallel ranks (eval/generation.py): the cost
# planner divides eval time by the world size when this is true.
SHARDED_GENERATION = True


@dataclass
class EvalResult:
    metrics: dict[str, float]  # val_*/<ds> (periodic) and, at the end, fvd/<ds>, kid/<ds>, CIs
    stamp: dict[str, str]  # protocol stamp; periodic fields prefixed "periodic."
    videos: list[Path] = field(default_factory=list)  # sample mp4s written this eval
    artifacts: list[tuple[Path, str]] = field(default_factory=list)  # (file, artifact dir)
    per_clip: dict[str, list[float]] = field(default_factory=dict)  # CLIP-SIM/LPIPS by clip


class _DetectorView(torch.utils.data.Dataset):
    """Real clips as a detector sees them: the first `frames` frames (I3D) or the one KID
    frame of each clip (Inception), so the real side follows the same frame rule."""

    def __init__(self, base: Any, frames: int, kind: str, seed: int) -> None:
        self.base, self.frames, self.kind, self.seed = base, frames, kind, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from rank_sweep.eval.metrics import kid_frame_index

        item = dict(self.base[i])
        video = np.asarray(item["video"])[: self.frames]
        if self.kind == "frame":
            k = kid_frame_index(self.seed, i, self.frames)
            video = video[k : k + 1]
        item["video"] = video
        return item


@dataclass
class _TierState:
    settings: TierSettings
    dataset: Any
    n_real: int
    n_fake: int
    real: dict[str, np.ndarray]
    conditioning: Any  # PrecomputedSet over the first n_fake clips


class Evaluator:
    def __init__(
        self,
        cfg: DictConfig,
        spec: Any,
        eval_set: Any,
        device: torch.device,
        *,
        state_dir: Path | None = None,
        dist_ctx: Any = None,
    ) -> None:
        self.cfg, self.spec, self.eval_set, self.device = cfg, spec, eval_set, device
        self.ecfg = cfg.eval
        self.state_dir, self.dist_ctx = state_dir, dist_ctx
        self.dataset_name = str(cfg.data.name)
        self.sample_frames = int(self.ecfg.sample_frames or cfg.data.frames)
        self.frames = int(self.ecfg.frames)
        self.seed = int(self.ecfg.seed)
        self.detectors: dict[str, Any] = {}
        self.tiers: dict[str, _TierState] = {}
        self.neg: torch.Tensor | None = None

    @property
    def is_main(self) -> bool:
        return self.dist_ctx is None or bool(self.dist_ctx.is_main)

    # -- once per job -----------------------------------------------------------------------
    def prepare(self) -> None:
        from rank_sweep.eval.detectors.loaders import load_frame_detector, load_video_detector
        from rank_sweep.world import resolve_detector_path  # i3d_path / inception_path=world

        final, periodic = final_settings(self.cfg), periodic_settings(self.cfg)
        metrics = set(final.metrics) | set(periodic.metrics if periodic else ())
        size = int(self.ecfg.detector_size)
        if metrics & {"fvd", "kvd"}:
            i3d = resolve_detector_path(self.ecfg.i3d_path, self.cfg.model)
            self.detectors["video"] = load_video_detector(i3d, size=size)
        if "kid" in metrics:
            inception = resolve_detector_path(self.ecfg.inception_path, self.cfg.model, "frame")
            self.detectors["frame"] = load_frame_detector(
                inception, size=int(self.ecfg.inception_size)
            )
        if float(self.ecfg.guidance_scale) > 1:
            self.neg = self.spec.encode_prompts([str(self.ecfg.negative_prompt)]).cpu()
        self.tiers[FINAL] = self._prepare_tier(final, self.eval_set)
        if periodic is not None:
            self.tiers[periodic.tier] = self._prepare_tier(periodic, self._val_set(periodic))
        self._prepare_extra()

    def _prepare_extra(self) -> None:
        """CLIP-SIM / LPIPS (eval/extra_metrics.py) per tier: the final tier always, the
        periodic one when `eval.extra_periodic` (an early stop on a plateau reads it)."""
        from rank_sweep.eval.extra_metrics import build_extra

        self.extras: dict[str, Any] = {}
        for name, state in self.tiers.items():
            if name == FINAL or bool(self.ecfg.get("extra_periodic", False)):
                extra = build_extra(self.cfg, self.spec, state.dataset, state.n_fake, self.device)
                if extra is not None:
                    self.extras[name] = extra

    def _val_set(self, settings: TierSettings) -> Any:
        from rank_sweep.data import build_dataset

        d = self.cfg.data
        frames = max(self.sample_frames, self.frames)
        return build_dataset(
            d, val_split(d), train=False, max_clips=settings.num_fake,
            frames=frames, height=int(d.height), width=int(d.width),
        )  # fmt: skip

    def _prepare_tier(self, settings: TierSettings, dataset: Any) -> _TierState:
        from torch.utils.data import Subset

        from rank_sweep.eval.real_stats import real_features, real_stats_key
        from rank_sweep.model.precompute import precompute_cached

        n_real = min(settings.num_real, len(dataset))
        n_fake = min(settings.num_fake, len(dataset))
        if n_real < settings.num_real or n_fake < settings.num_fake:
            log.warning(
                "%s tier: split %s has %d clips: using %d real / %d generated (asked %d / %d); "
                "stamped", settings.tier, settings.split, len(dataset), n_real, n_fake,
                settings.num_real, settings.num_fake,
            )  # fmt: skip
        real = {}
        for kind, det in self.detectors.items():
            if not _kind_needed(kind, settings.metrics):
                continue
            key = real_stats_key(
                dataset=dataset.fingerprint(), frames=self.frames, detector=det.sha256,
                size=det.size, n=n_real, rule=_frame_rule(kind), seed=self.seed,
            )  # fmt: skip
            view = _DetectorView(dataset, self.frames, kind, self.seed)
            real[kind] = real_features(view, det, num_clips=n_real, key=key)
            if kind == "frame":  # [N, 1, D]: the one KID frame per clip, as on the fake side
                real[kind] = real[kind].reshape(n_real, -1)
        d = self.cfg.data
        cond = precompute_cached(
            self.spec, Subset(dataset, range(n_fake)), fingerprint=dataset.fingerprint(),
            frames=self.sample_frames, height=int(d.height), width=int(d.width),
            desc=f"{settings.tier} eval conditioning",
        )  # fmt: skip
        return _TierState(settings, dataset, n_real, n_fake, real, cond)

    # -- at each eval -----------------------------------------------------------------------
    def evaluate(self, transformer: Any, step: int, *, final: bool, out_dir: Path) -> EvalResult:
        result = EvalResult(metrics={}, stamp=self._periodic_stamp())
        for name, state in self.tiers.items():
            if name == FINAL and not final:
                continue
            self._run_tier(state, transformer, step, Path(out_dir), result)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if "_ci_" not in k)
        log.info("eval @%d: %s", step, shown or "(validation loss only)")
        return result

    def _conditioning(self, state: _TierState):
        from rank_sweep.eval.sample import conditioning_from_entry

        def one(i: int) -> dict[str, torch.Tensor]:
            return conditioning_from_entry(state.conditioning[i], self.neg)

        return one

    def _run_tier(
        self, state: _TierState, model: Any, step: int, out_dir: Path, result: EvalResult
    ) -> None:
        from rank_sweep.eval.generation import (
            Batches,
            BatchStore,
            GenerationJob,
            generate_features,
            meta_key,
        )

        s = state.settings
        dets = {k: d for k, d in self.detectors.items() if _kind_needed(k, s.metrics)}
        writer = _SampleWriter(out_dir, step, s.tier, int(self.ecfg.log_videos), self.cfg)
        extra = self.extras.get(s.tier) if self.is_main else None
        per_clip: list[dict[str, float]] = []

        def on_clips(start: int, clips: np.ndarray) -> None:
            writer(start, clips)
            if extra is not None:  # scored clip by clip: never all clips in memory
                per_clip.extend(extra.score_clip(start + j, c) for j, c in enumerate(clips))

        job = GenerationJob(
            spec=self.spec, model=model, conditioning=self._conditioning(state),
            detectors=dets, batches=Batches(state.n_fake, s.batch_size),
            sample_frames=self.sample_frames, detector_frames=self.frames,
            steps=s.sample_steps, guidance_scale=float(self.ecfg.guidance_scale), seed=self.seed,
            on_clips=on_clips if self.is_main else None,
        )  # fmt: skip
        meta = {
            "step": step, "tier": s.tier, "n": state.n_fake, "batch": s.batch_size,
            "steps": s.sample_steps, "guidance": self.ecfg.guidance_scale, "seed": self.seed,
            "frames": self.frames, "sample_frames": self.sample_frames,
            "negative_prompt": self.ecfg.negative_prompt,
            "conditioning": state.dataset.fingerprint(),
            **{f"det.{k}": d.sha256 for k, d in dets.items()},
        }  # fmt: skip
        root = None
        if s.tier == FINAL:  # the periodic tier is cheap: no progress files
            base = self.state_dir if self.state_dir is not None else out_dir
            root = Path(base) / "eval_progress" / f"{s.tier}-{meta_key(meta)}"
        fake = generate_features(job, BatchStore(root, meta), self.dist_ctx)
        payload = None
        if fake is not None:  # rank 0
            payload = self._score(state, fake, step, out_dir)
        payload = _broadcast(payload, self.dist_ctx)
        metrics, stamp, artifacts = payload
        result.metrics.update(metrics)
        result.stamp.update(stamp)
        if extra is not None:
            self._add_extra(extra, per_clip, state, result)
        if self.is_main:
            result.artifacts += [(Path(p), d) for p, d in artifacts]
            result.videos += writer.paths
            if writer.kept:  # what a person looks at: real clip 0 | generated, upscaled
                real0 = np.asarray(state.dataset[0]["video"])[: self.sample_frames]
                result.videos += writer.side_by_side(real0)

    def _add_extra(
        self, extra: Any, per_clip: list[dict[str, float]], state: _TierState, result: EvalResult
    ) -> None:
        s = state.settings
        if len(per_clip) != state.n_fake:  # resumed batches or other ranks' shards unseen
            log.warning(
                "%s tier: CLIP-SIM/LPIPS scored %d of %d clips (resumed or sharded eval); "
                "not reported for this eval", s.tier, len(per_clip), state.n_fake,
            )  # fmt: skip
            return
        summary = extra.summarize(per_clip)
        for key, value in summary.metrics.items():
            metric, _, dataset = key.partition("/")
            result.metrics[s.name(metric, dataset)] = value
        prefix = "" if s.tier == FINAL else f"{s.tier}."
        result.stamp.update({prefix + k: v for k, v in summary.stamp.items()})
        if s.tier == FINAL:
            result.per_clip = summary.per_clip

    def _score(
        self, state: _TierState, fake: dict[str, np.ndarray], step: int, out_dir: Path
    ) -> tuple[dict[str, float], dict[str, str], list[tuple[str, str]]]:
        from rank_sweep.eval.scoring import protocol_stamp, score

        s = state.settings
        e = self.ecfg
        scores = score(
            state.real, fake, metrics=list(s.metrics), kid_subsets=int(e.kid_subsets),
            kid_subset_size=int(e.kid_subset_size), seed=self.seed, bootstrap=s.bootstrap,
            ddof=int(e.cov_ddof), level=float(e.interval_level),
        )  # fmt: skip
        metrics = {
            s.name(k, self.dataset_name): float(v)
            for k, v in scores.items()
            if k != "kid_subset_size_used"
        }
        d = self.cfg.data
        stamp = protocol_stamp(
            self.detectors.get("video") if "video" in state.real else None,
            self.detectors.get("frame") if "frame" in state.real else None,
            n_real=state.n_real, n_fake=state.n_fake, frames=self.frames,
            resolution=f"{d.height}x{d.width}->{e.detector_size}", dataset=self.dataset_name,
            split=s.split, sample_steps=s.sample_steps, seed=self.seed,
            kid_subset_size=int(scores.get("kid_subset_size_used", e.kid_subset_size)),
            fps=d.fps if d.fps is not None else "native", guidance_scale=float(e.guidance_scale),
            negative_prompt=str(e.negative_prompt) if float(e.guidance_scale) > 1 else "",
            sampler=_sampler_name(self.spec), sample_frames=self.sample_frames,
            model_dtype=str(self.cfg.model.get("dtype", "float32")), cov_ddof=int(e.cov_ddof),
            bootstrap=s.bootstrap, tier=s.tier,
            split_rule=str(state.dataset.meta.get("split_rule", "as listed")),
        )  # fmt: skip
        from rank_sweep.world import world_stamp  # which embedded world (if any) was measured

        stamp.update(world_stamp(self.cfg.model))
        artifacts: list[tuple[str, str]] = []
        if s.tier == FINAL:
            stamp = dict(stamp, **{"eval.interval_level": f"{float(e.interval_level):g}"})
            path = _save_features(out_dir, state, fake, stamp, step)
            artifacts.append((str(path), FEATURES_ARTIFACT_DIR))
        else:
            stamp = {
                (k if k == C.TAG_DETECTOR_PRETRAINED else f"{s.tier}.{k}"): v
                for k, v in stamp.items()
            }
        return metrics, stamp, artifacts

    def _periodic_stamp(self) -> dict[str, str]:
        """What the validation loss was measured on (the loop computes it on these clips)."""
        d, t = self.cfg.data, self.cfg.train
        dets = list(self.detectors.values())
        return {
            # Unprefixed: the run's tag from its first eval on, also for runs pruned early.
            C.TAG_DETECTOR_PRETRAINED: str(all(bool(x.pretrained) for x in dets)).lower(),
            "periodic.val.split": val_split(d),
            "periodic.val.fraction": f"{float(d.val_fraction):g}",
            "periodic.val.rule": str(d.val_rule),
            "periodic.val.loss_items": str(int(t.val_clips)),
        }


def _kind_needed(kind: str, metrics: tuple[str, ...]) -> bool:
    return (kind == "video" and bool({"fvd", "kvd"} & set(metrics))) or (
        kind == "frame" and "kid" in metrics
    )


def _frame_rule(kind: str) -> str:
    from rank_sweep.eval.metrics import KID_FRAME_RULE

    return KID_FRAME_RULE if kind == "frame" else "first-frames"


def _sampler_name(spec: Any) -> str:
    sched = spec.load_scheduler()
    shift = getattr(sched.config, "flow_shift", None) or getattr(sched.config, "shift", None)
    return f"{type(sched).__name__}(shift={shift})"


def _broadcast(payload: Any, ctx: Any) -> Any:
    """Rank 0's scores on every rank (each rank's loop reads the rung value)."""
    if ctx is None or not ctx.distributed:
        return payload
    import torch.distributed as tdist

    box = [payload]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _save_features(
    out_dir: Path, state: _TierState, fake: dict[str, np.ndarray], stamp: dict[str, str], step: int
) -> Path:
    """Generated and real features of the final tier in one npz: the report pairs runs
    clip by clip from these (same clip indices, same real clips)."""
    import json
    import os

    path = out_dir / FEATURES_ARTIFACT_DIR / GEN_FEATURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"fake_{k}": v for k, v in fake.items()}
    arrays.update({f"real_{k}": v for k, v in state.real.items()})
    arrays["stamp"] = np.array(json.dumps(stamp, sort_keys=True))
    arrays["step"] = np.array(step)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


class _SampleWriter:
    """Writes the first `limit` generated clips of an eval as mp4 (main rank only)."""

    def __init__(self, out_dir: Path, step: int, tier: str, limit: int, cfg: DictConfig) -> None:
        self.dir = out_dir / "samples"
        self.step, self.tier, self.limit = step, tier, limit
        self.fps = float(cfg.data.fps or 16)
        self.paths: list[Path] = []
        self.kept: list[np.ndarray] = []  # the clips written, for the side-by-side view

    def __call__(self, start: int, clips: np.ndarray) -> None:
        from rank_sweep.data.video import write_video

        for j in range(max(0, min(len(clips), self.limit - start))):
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / f"{self.tier}_step{self.step:06d}_clip{start + j}.mp4"
            write_video(path, clips[j], fps=self.fps)
            self.paths.append(path)
            self.kept.append(np.asarray(clips[j]))

    def side_by_side(self, real: np.ndarray) -> list[Path]:
        from rank_sweep.eval.samples import write_eval_samples

        return write_eval_samples(self.dir, self.step, real, self.kept, self.fps, tag=self.tier)
