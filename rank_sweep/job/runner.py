"""The body of one job: data -> precompute -> adapters -> train with periodic eval -> save.

One code path for LoRA and full fine-tuning, for the tiny CPU model and the 14B model.
`run` opens the job's reporting and either publishes a reused run or hands over to
`JobRunner`, whose `setup()` steps (data, model, eval) prepare what `train()` uses
(torchtune's recipe shape: a short orchestrator over named setup steps).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rank_sweep.job.guard import after_finish, hold_job_lock, release, relog_history
from rank_sweep.job.identity import JobIdentity
from rank_sweep.job.reporter import Reporter, objective_key
from rank_sweep.seeding import derive_seed, forked_rng, seed_global
from rank_sweep.track import contract as C
from rank_sweep.utils.atomic import write_text_atomic
from rank_sweep.utils.device import pick_device

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    status: str  # a contract status, or "reused"
    objective: float | None
    summary: dict[str, Any]


def run(cfg: DictConfig, out_dir: Path, sweep: Any = None, dist_ctx: Any = None) -> JobOutcome:
    """Train and evaluate one job; every outcome (also failure) is reported before returning."""
    from rank_sweep.track.tracker import flatten_config
    from rank_sweep.train.dist import any_rank
    from rank_sweep.train.requeue import RequeueRequested

    identity = JobIdentity.from_config(cfg)
    is_main = dist_ctx is None or dist_ctx.is_main
    device = pick_device(cfg.device, getattr(dist_ctx, "local_rank", 0))
    sdir = identity.state_dir(cfg)
    lock = hold_job_lock(sdir, enabled=is_main)  # one process per job; a 2nd copy waits
    reporter = Reporter(cfg, identity, sdir, sweep=sweep, enabled=is_main)
    try:  # opened inside: a failure once the MLflow run exists still marks it failed
        container = OmegaConf.to_container(cfg, resolve=True)
        if not identity.is_lora:  # the baseline has no rank/alpha: keep MLflow's Compare clean
            container.pop("lora", None)
        params = flatten_config(container)
        params[C.PARAM_DEVICE] = device.type
        params[C.PARAM_FINGERPRINT] = identity.fingerprint
        reporter.open(params)
        if any_rank(reporter.reused is not None, dist_ctx):  # rank 0 looked it up; all follow
            if is_main:
                return _publish_reused(cfg, reporter, out_dir, sdir)
            return JobOutcome("reused", None, {})
        job = JobRunner(cfg, identity, out_dir, sdir, reporter, dist_ctx, device)
        job.setup()
        return job.train()
    except RequeueRequested:
        raise  # not a failure: the requeued job resumes this run from its checkpoint
    except BaseException as exc:  # reported, then re-raised: never swallowed
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        reporter.finish(C.FAILED, None, error=error)
        raise
    finally:
        release(lock)


def _publish_reused(cfg: DictConfig, reporter: Reporter, out_dir: Path, sdir: Path) -> JobOutcome:
    """The run dir of a reused job still gets its summary.json (the reused run's, with
    `reused_from` and where its weights are), so a user can follow it; the state dir gets
    the run's final rung record, so a sweep ranks the reused arm like any other."""
    from rank_sweep.prune.rung import budget, record_file

    if not reporter.restore_rung_record(record_file(sdir, budget(cfg))):
        log.warning("reused run %s has no final rung record", reporter.reused_source())
    summary = reporter.reused_summary()
    write_text_atomic(Path(out_dir) / C.SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
    log.info(
        "job reused run %s: summary in %s, weights at %s",
        summary["reused_from"],
        Path(out_dir) / C.SUMMARY_FILE,
        summary["weights"],
    )
    return JobOutcome("reused", reporter.reused_objective(), summary)


@dataclass
class EvalRecorder:
    """The training loop's `on_eval` hook: evaluates, logs metrics, the protocol stamp
    (once) and sample videos, keeps the eval history (checkpointed), reports the objective
    to the trial and says whether to stop."""

    cfg: DictConfig
    reporter: Reporter
    evaluator: Any
    out_dir: Path
    model: Any = None  # set once the model is built
    watch: Any = None  # PlateauWatch when train.early_stop.metric is set
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return objective_key(self.cfg)

    def __call__(
        self, step: int, val_loss: float | None, final_override: bool | None = None
    ) -> bool:
        final = step >= self.cfg.train.steps if final_override is None else final_override
        result = self.evaluator.evaluate(self.model, step, final=final, out_dir=self.out_dir)
        metrics = dict(result.metrics)
        # The loop logs val/loss itself at every validation step; it is kept here only for
        # the summary's eval history (and as an objective, when prune.metric names it).
        self.reporter.log_metrics(metrics, step)
        if val_loss is not None:
            metrics[C.VAL_LOSS] = val_loss
        # Per tier: the final tier's fields appear at the end (same values on a rerun).
        if result.stamp:
            dataset = str(self.cfg.data.name)
            self.reporter.log_params(
                {C.protocol_param(dataset, k): v for k, v in result.stamp.items()}
            )
            pretrained = result.stamp.get(C.TAG_DETECTOR_PRETRAINED, "")
            self.reporter.set_tags({C.TAG_DETECTOR_PRETRAINED: pretrained})
        for video in result.videos:
            self.reporter.log_artifact(video, C.SAMPLES_DIR)
        for path, where in result.artifacts:  # final tier: generated features for pairing
            self.reporter.log_artifact(path, where)
        if final and result.per_clip and self.reporter.enabled:  # CLIP-SIM/LPIPS, for pairing
            clips = self.out_dir / "extra_per_clip" / f"{self.cfg.data.name}.json"
            clips.parent.mkdir(parents=True, exist_ok=True)
            clips.write_text(json.dumps({"step": step, **result.per_clip}))
            self.reporter.log_artifact(clips, "extra_per_clip")
        self.history.append({"step": step, **metrics})
        value = metrics.get(self.key)
        if value is None:
            raise KeyError(
                f"prune.metric={self.key!r} is not produced by eval (got {sorted(metrics)})"
            )
        eval_index = -(-step // int(self.cfg.eval.every))
        # Only rank 0 reports; the loop makes every rank follow its decision.
        rerun = final_override is not None  # the plateau's final tier: already reported
        prune = not rerun and self.reporter.report_eval(float(value), eval_index) and not final
        w = self.watch
        if w is not None and w.stopped_at is None and not final and w.update(step, metrics):
            # The run's own stop (not a prune): the final tier runs now, once.
            from rank_sweep.train.early_stop import TAG_PLATEAU_STEP

            log.info("plateau of %s at step %d: stopping", w.metric, step)
            self.reporter.set_tags({TAG_PLATEAU_STEP: str(step)})
            self(step, val_loss, final_override=True)
            return True
        return prune

    @property
    def objective(self) -> float | None:
        return self.history[-1].get(self.key) if self.history else None

    def extra(self) -> dict[str, str]:
        plateau = self.watch.state() if self.watch is not None else {}
        return {"history": json.dumps(self.history), "plateau": json.dumps(plateau)}

    def restore(self, extra: dict[str, str]) -> None:
        restored = json.loads(extra.get("history", "[]"))
        # Replace, not extend: a multi-stage run restores once per stage checkpoint.
        self.history[:] = restored
        if self.watch is not None:
            self.watch.load(json.loads(extra.get("plateau", "{}")))
        # Re-logged: fills a store that lacks this job's history (the tracker drops
        # points it already has).
        relog_history(self.reporter, restored)


class JobRunner:
    """One job after its reporting is open: `setup()` then `train()`."""

    def __init__(
        self,
        cfg: DictConfig,
        identity: JobIdentity,
        out_dir: Path,
        state_dir: Path,
        reporter: Reporter,
        dist_ctx: Any,
        device: torch.device,
    ) -> None:
        self.cfg, self.identity, self.reporter = cfg, identity, reporter
        self.out_dir, self.state_dir = Path(out_dir), state_dir
        self.dist_ctx, self.device = dist_ctx, device
        self.distributed = dist_ctx is not None and dist_ctx.world_size > 1

    def setup(self) -> None:
        from rank_sweep.train.perf import PeakMemory

        # This job's own peak from here on (jobs of a multirun share one process).
        self.memory = PeakMemory(self.device).reset()
        torch.manual_seed(self.cfg.train.seed)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / C.CONFIG_FILE).write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        self._setup_data()  # encodes what the latent cache lacks ...
        self._setup_eval()  # ... and the eval conditioning it lacks
        self.spec.free_encoders()  # whatever of them was loaded: the transformer comes next
        self._setup_model()

    def _setup_data(self) -> None:
        """Train / validation / eval clip sets and their cached latents."""
        from rank_sweep.data import build_dataset
        from rank_sweep.eval.tiers import fit_split, val_split
        from rank_sweep.model.precompute import precompute_cached
        from rank_sweep.model.spec import WanSpec

        d = self.cfg.data
        size = dict(frames=int(d.frames), height=int(d.height), width=int(d.width))
        seed = self.cfg.train.seed
        max_train = d.max_train_clips
        train_set = build_dataset(
            d, fit_split(d), train=True, seed=seed, max_clips=max_train, **size
        )
        val_set = build_dataset(
            d, val_split(d), train=False, max_clips=self.cfg.train.val_clips, **size
        )
        e = self.cfg.eval
        eval_frames = max(int(e.sample_frames or d.frames), int(e.frames))
        n_eval = max(int(e.num_real), int(e.num_fake))
        self.eval_set = build_dataset(
            d, d.eval_split, train=False, max_clips=n_eval, **dict(size, frames=eval_frames)
        )
        self.skipped = sum(len(s.skipped) for s in (train_set, val_set, self.eval_set))
        self.reporter.log_metrics(
            {C.DATA_TRAIN_CLIPS: len(train_set), C.DATA_SKIPPED_CLIPS: self.skipped}, 0
        )
        if self.skipped:
            log.warning("skipped %d unreadable clips (see data check for reasons)", self.skipped)
        # Encoders load on the first cache miss (spec._part): the jobs of a sweep after the
        # first find every latent and conditioning entry cached and load none (~3 s each).
        self.spec = WanSpec.from_config(self.cfg.model, device=self.device)
        # the untrained base is only scored: no training latents to encode
        self.train_pre = (
            None
            if self.identity.is_base
            else precompute_cached(self.spec, train_set, desc="train latents", **size)
        )
        self.val_pre = precompute_cached(self.spec, val_set, desc="val latents", **size)

    def _setup_eval(self) -> None:
        """Detectors, real features and sampling conditioning (while the encoders are loaded)."""
        from rank_sweep.eval.evaluator import Evaluator

        evaluator = Evaluator(
            self.cfg, self.spec, self.eval_set, self.device,
            state_dir=self.state_dir, dist_ctx=self.dist_ctx,
        )  # fmt: skip
        evaluator.prepare()
        from rank_sweep.train.early_stop import PlateauWatch

        watch = PlateauWatch.from_config(self.cfg.train)  # None unless early_stop.metric set
        self.recorder = EvalRecorder(self.cfg, self.reporter, evaluator, self.out_dir, watch=watch)

    def _setup_model(self) -> None:
        """The transformer with LoRA adapters (or all weights trainable), placed and wrapped."""
        from rank_sweep.model.adapters import apply_finetune
        from rank_sweep.train.precision import base_dtype, upcast_trainable

        transformer = self.spec.load_transformer(dtype=base_dtype(self.cfg))
        self.total_params = sum(p.numel() for p in transformer.parameters())
        with forked_rng(derive_seed(self.cfg.train.seed, "adapter-init")):  # any cache state
            self.trainable = apply_finetune(transformer, self.identity.method, self.cfg.lora)
        upcast_trainable(transformer)  # adapters and their AdamW state in fp32
        self.reporter.log_metrics(
            {C.TRAINABLE_PARAMS: self.trainable, C.TOTAL_PARAMS: self.total_params}, 0
        )
        log.info(
            "%s: %s trainable of %s params",
            self.identity.describe(),
            f"{self.trainable:,}",
            f"{self.total_params:,}",
        )
        self.transformer = transformer.to(self.device)
        self.model = self.transformer
        if self.distributed and not self.identity.is_base:  # nothing to shard gradients of
            from rank_sweep.train.dist import wrap_model

            self.model = wrap_model(transformer, self.cfg.dist, self.dist_ctx, self.cfg.train)
        self.recorder.model = self.model

    def train(self) -> JobOutcome:
        from rank_sweep.model.spec import forward_batch
        from rank_sweep.train.loop import TrainHooks, train

        if self.identity.is_base:
            return self._score_base()
        cfg, rec = self.cfg, self.recorder
        hooks = TrainHooks(
            on_log=self.reporter.log_metrics,
            on_eval=rec,
            get_extra=rec.extra,
            set_extra=rec.restore,
        )
        from rank_sweep.train.stages import (
            TAG_RECIPE,
            TAG_STAGES,
            describe,
            parse_stages,
            recipe_name,
        )

        stages = parse_stages(cfg.train)  # [] = the one-stage recipe
        self.reporter.set_tags({TAG_RECIPE: recipe_name(stages), TAG_STAGES: describe(stages)})
        t0 = time.time()
        seed_global(derive_seed(cfg.train.seed, "train"))  # dropout etc.; a resume restores its own
        shift = float(cfg.train.shift or cfg.model.flow_shift)
        common = dict(
            lr=float(cfg.finetune.lr) * float(cfg.train.lr_scale),
            state_dir=self.state_dir,
            forward_fn=forward_batch,
            shift=shift,
            val_set=self.val_pre,
            eval_every=int(cfg.eval.every),
            hooks=hooks,
            dist=self.dist_ctx,
            memory=self.memory,
        )
        watch = rec.watch
        if stages:  # stage k+1 continues stage k's adapter; boundaries marked in MLflow
            from rank_sweep.train.stages import train_stages

            def on_stage(k: int, stage: Any, offset: int) -> None:
                self.reporter.log_metrics({"train/stage": k}, offset)

            result = train_stages(
                self.model, self.train_pre, cfg.train, stages, method=self.identity.method,
                on_stage=on_stage,
                stop_requested=lambda: bool(watch and watch.stopped_at is not None), **common,
            )  # fmt: skip
        else:
            result = train(self.model, self.train_pre, cfg.train, **common)
        if not result.stopped_early:  # rung record (paired per-item val loss) for the sweeper
            from rank_sweep.prune.rung import record_rung

            record = record_rung(cfg, self.state_dir, self.model, self.val_pre,
                                 result.steps_done, rec.history, final=not result.paused,
                                 forward_fn=forward_batch, shift=shift,
                                 dist_ctx=self.dist_ctx)  # fmt: skip
            if not result.paused:  # travels with the run: a sweep reusing it ranks it too
                self.reporter.log_artifact(record, C.RUNGS_ARTIFACT_DIR)
        if result.paused:  # the sweeper decides; a survivor is relaunched and resumes
            self.reporter.finish(C.PAUSED, None)
            log.info(
                "job paused at step %d of %d for the sweeper", result.steps_done, cfg.train.steps
            )
            return JobOutcome(C.PAUSED, None, {"steps": result.steps_done, "status": C.PAUSED})
        plateau_step = watch.stopped_at if watch is not None else None
        if plateau_step is not None:
            status = C.STOPPED_PLATEAU  # the run's own stop, kept apart from pruning
        else:
            status = C.PRUNED if result.stopped_early else C.COMPLETED
        summary = {
            **self.identity.summary(),
            "trainable_params": self.trainable,
            "total_params": self.total_params,
            "steps": result.steps_done,
            "status": status,
            "pruned_step": result.stop_step if status == C.PRUNED else None,
            "plateau_step": plateau_step,
            "recipe": [st.describe() for st in stages] or "one_stage",
            "final_train_loss": result.final_train_loss,
            "final_val_loss": result.final_val_loss,
            "step_time_s": result.step_time_s,  # median over timed steps
            "step_time_p10_s": result.step_time_p10_s,
            "step_time_p90_s": result.step_time_p90_s,
            "step_time_n": result.step_time_n,
            "peak_mem_mb": result.peak_mem_mb,
            "peak_mem_method": result.mem_method,
            "wall_s": round(time.time() - t0, 2),
            "objective": {rec.key: rec.objective},
            "evals": rec.history,
            "skipped_clips": self.skipped,
        }
        self._save(result, summary)
        log.info("job %s at step %d: %s=%s", status, result.steps_done, rec.key, rec.objective)
        return JobOutcome(status, rec.objective, summary)

    def _score_base(self) -> JobOutcome:
        """finetune=none: nothing is trained. The final tier scores the base weights at step
        0 with the same clips, noise and detector as every fine-tune (the report's "base, no
        fine-tune" row), and its rung record holds the per-item validation loss on the same
        items, noise and sigmas as the arms' records."""
        from rank_sweep.model.spec import forward_batch
        from rank_sweep.prune.rung import read_record, record_rung

        cfg, rec = self.cfg, self.recorder
        t0 = time.time()
        rec(0, None, final_override=True)
        shift = float(cfg.train.shift or cfg.model.flow_shift)
        path = record_rung(cfg, self.state_dir, self.model, self.val_pre, 0, rec.history,
                           final=True, forward_fn=forward_batch, shift=shift,
                           dist_ctx=self.dist_ctx)  # fmt: skip
        if not self.reporter.enabled:
            return JobOutcome(C.COMPLETED, rec.objective, {})
        items = read_record(path).values("val_loss")
        val_loss = math.fsum(items) / len(items)
        peak = self.memory.peak_mb()
        self.reporter.log_metrics(
            {C.VAL_LOSS: val_loss, C.PEAK_MEM_MB: peak, C.TRAIN_STEPS_DONE: 0}, 0
        )
        summary = {
            **self.identity.summary(),
            "trainable_params": 0,
            "total_params": self.total_params,
            "steps": 0,
            "status": C.COMPLETED,
            "final_val_loss": val_loss,
            "peak_mem_mb": peak,
            "peak_mem_method": self.memory.method,
            "wall_s": round(time.time() - t0, 2),
            "objective": {rec.key: rec.objective},
            "evals": rec.history,
            "skipped_clips": self.skipped,
        }
        self.reporter.log_artifact(path, C.RUNGS_ARTIFACT_DIR)
        self._publish(summary)
        log.info("base scored: %s=%s, val loss %.4f", rec.key, rec.objective, val_loss)
        return JobOutcome(C.COMPLETED, rec.objective, summary)

    def _plain_model(self) -> Any:
        """The trained weights in a plain module (collective when the model is sharded)."""
        if not self.distributed:
            return self.transformer
        from rank_sweep.model.adapters import apply_finetune
        from rank_sweep.train.precision import base_dtype, upcast_trainable
        from rank_sweep.train.state import unsharded_copy

        def build() -> Any:
            fresh = self.spec.load_transformer(dtype=base_dtype(self.cfg))
            apply_finetune(fresh, self.identity.method, self.cfg.lora)
            upcast_trainable(fresh)
            return fresh

        return unsharded_copy(self.model, build, self.dist_ctx)  # every rank calls it

    def _save(self, result: Any, summary: dict[str, Any]) -> None:
        from rank_sweep.model.adapters import result_artifacts, save_result
        from rank_sweep.train.precision import save_dtype

        plain = self._plain_model()
        if not self.reporter.enabled:
            return
        weights = self.identity.weights_dir
        # LoRA files in finetune.save_dtype (bf16 by default), the trained scale folded in
        save_result(
            plain, self.identity.method, self.out_dir / weights, self.identity.lora_meta(),
            save_dtype(self.cfg),
        )  # fmt: skip
        self.reporter.log_metrics(
            {
                C.STEP_TIME_S: result.step_time_s,
                C.STEP_TIME_P10_S: result.step_time_p10_s,
                C.STEP_TIME_P90_S: result.step_time_p90_s,
                C.PEAK_MEM_MB: result.peak_mem_mb,
                C.TRAIN_STEPS_DONE: result.steps_done,
            },
            result.steps_done,
        )
        for item in result_artifacts(self.out_dir / weights):  # diffusers + ComfyUI files
            self.reporter.log_artifact(item, weights)
        self._publish(summary)

    def _publish(self, summary: dict[str, Any]) -> None:
        """The end of every finished job (trained or the scored base): summary.json in the
        run dir and among the artifacts with the config, the final status, the state trim."""
        summary_path = self.out_dir / C.SUMMARY_FILE
        write_text_atomic(summary_path, json.dumps(summary, indent=2, default=str))
        self.reporter.log_artifact(self.out_dir / C.CONFIG_FILE)
        self.reporter.log_artifact(summary_path)
        status = summary["status"]
        self.reporter.finish(
            status, self.recorder.objective, pruned_step=summary.get("pruned_step")
        )
        after_finish(self.cfg, self.state_dir, status)  # trim resume state for reuse
