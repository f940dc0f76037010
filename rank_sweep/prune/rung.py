"""Rungs from the job's side, and the sweeper's view of a rank_sweep job.

Job side: a job launched with `train.stop_at=S` trains to step S (the LR schedule still
comes from `train.steps`), checkpoints and stops; `write_rung` then stores the rung
metric, per item, as `<state dir>/rungs/step<S>.json`. The completed job writes the same
record at its final step. The state dir is keyed by the job fingerprint (which leaves out
the stop knob and the prune settings), so a rerun finds the record and the checkpoint.

Items of the default rung metric (`val_loss`) are (validation clip, sigma quantile)
pairs with noise fixed per pair by `train.seed`: every arm sees the same items, noise and
timesteps, so arm-vs-arm differences are paired item by item
(`rank_sweep.train.steps.per_item_val_losses`, whose mean is the validation loss).

Sweeper side (the protocol the Hydra sweeper plugin calls, see
`hydra_plugins/rank_sweep_sweeper`): `describe`, `record_path`, `budget`,
`stop_override`, `on_decision`, `on_final`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rank_sweep.track import contract as C

log = logging.getLogger(__name__)

RUNGS_DIR = "rungs"
STOP_KEY = "train.stop_at"


@dataclass
class RungRecord:
    arm: str
    step: int
    final: bool  # True: the job completed its budget at this step
    items: dict[str, list[float]]  # metric name -> per-item values (paired across arms)
    scalars: dict[str, float] = field(default_factory=dict)  # e.g. light FVD at this step

    def values(self, metric: str) -> list[float]:
        """Per-item values of `metric`; a scalar metric is one item."""
        if metric in self.items:
            return list(self.items[metric])
        if metric in self.scalars:
            return [float(self.scalars[metric])]
        raise KeyError(
            f"rung metric {metric!r} not recorded at step {self.step} of {self.arm} "
            f"(have {sorted(self.items) + sorted(self.scalars)}); a scalar metric must be "
            "evaluated at the rung step (eval.every dividing it)"
        )


def record_file(state_dir: Path, step: int) -> Path:
    return Path(state_dir) / RUNGS_DIR / f"step{int(step):08d}.json"


def write_record(path: Path, record: RungRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)  # atomic: the sweeper never reads half a record


def read_record(path: Path) -> RungRecord | None:
    if not Path(path).exists():
        return None
    return RungRecord(**json.loads(Path(path).read_text()))


# -- the job side ----------------------------------------------------------------------------


def write_rung(
    cfg: DictConfig,
    state_dir: Path,
    step: int,
    items: Mapping[str, Sequence[float]],
    history: Sequence[Mapping[str, float]],
    final: bool,
) -> Path:
    """Store the rung record of this job at `step` (main rank only)."""
    from rank_sweep.job.identity import JobIdentity

    scalars = {}
    for h in history:  # metrics of an eval that happened at exactly this step
        if int(h.get("step", -1)) == int(step):
            scalars = {k: float(v) for k, v in h.items() if k != "step"}
    record = RungRecord(
        arm=JobIdentity.from_config(cfg).label,
        step=int(step),
        final=bool(final),
        items={k: [float(x) for x in v] for k, v in items.items()},
        scalars=scalars,
    )
    path = record_file(state_dir, step)
    write_record(path, record)
    log.info("rung record at step %d (%s): %s", step, "final" if final else "paused", path)
    return path


def record_rung(
    cfg: DictConfig,
    state_dir: Path,
    model: torch.nn.Module,
    val_set: Any,
    step: int,
    history: Sequence[Mapping[str, float]],
    *,
    final: bool,
    forward_fn: Any,
    shift: float,
    dist_ctx: Any = None,
) -> Path:
    """The job's side of a rung: per-item validation losses of `model` at `step`, written
    by the main rank. Every rank calls it (a sharded forward needs all of them); a rerun
    that finds the record already written computes nothing."""
    from rank_sweep.train.dist import any_rank
    from rank_sweep.train.loop import amp_dtype_for

    is_main = dist_ctx is None or dist_ctx.is_main
    path = record_file(state_dir, step)
    if any_rank(is_main and path.exists(), dist_ctx):
        return path
    p = next(iter(model.parameters()))
    amp = amp_dtype_for(str(cfg.train.mixed_precision), p.device)
    rank = getattr(dist_ctx, "rank", 0) if dist_ctx is not None else 0
    world = getattr(dist_ctx, "world_size", 1) if dist_ctx is not None else 1
    from rank_sweep.train.steps import per_item_val_losses

    items = per_item_val_losses(
        model, val_set, forward_fn, cfg.train, shift, p.device, amp, rank, world
    )
    if is_main:
        write_rung(cfg, state_dir, step, {"val_loss": items}, history, final)
    return path


# -- the sweeper's protocol for rank_sweep jobs ---------------------------------------------
@dataclass(frozen=True)
class ArmInfo:
    label: str  # readable arm name: lora-r8, full, base
    fingerprint: str  # job identity: same fingerprint = same job (deduplicated)
    baseline: bool  # full fine-tune or untrained base: launched once, to its budget, never ranked
    trial_params: dict[str, Any]


def describe(cfg: DictConfig) -> ArmInfo:
    from rank_sweep.job.identity import JobIdentity

    ident = JobIdentity.from_config(cfg)
    is_lora = ident.is_lora
    return ArmInfo(
        label=ident.label,
        fingerprint=ident.fingerprint,
        baseline=not is_lora,
        trial_params={
            "method": str(cfg.finetune.method),
            "lora_rank": int(cfg.lora.rank) if is_lora else 0,
        },
    )


def record_path(cfg: DictConfig, step: int) -> Path:
    from rank_sweep.job.identity import JobIdentity

    return record_file(JobIdentity.from_config(cfg).state_dir(cfg), step)


def budget(cfg: DictConfig) -> int:
    """Steps the arm trains in all: none for the untrained base (finetune=none)."""
    from rank_sweep.model.adapters import BASE_METHOD

    return 0 if str(cfg.finetune.method) == BASE_METHOD else int(cfg.train.steps)


def stop_override(step: int) -> str:
    return f"{STOP_KEY}={int(step)}"


def _child_run_id(cfg: DictConfig) -> str | None:
    from rank_sweep.job.identity import JobIdentity

    p = JobIdentity.from_config(cfg).state_dir(cfg) / "run.json"
    try:
        return json.loads(p.read_text()).get("run_id") if p.exists() else None
    except (OSError, json.JSONDecodeError):
        return None


def on_decision(ctx: Any, decision: Any, arms: Mapping[str, DictConfig], log_doc: dict) -> None:
    """MLflow: pruned children get status=pruned, pruned_step and reason (and end as the
    contract maps a pruned run); the parent gets the decisions so far as decisions.json."""
    if not getattr(ctx, "tracking_uri", None):
        return
    from mlflow.tracking import MlflowClient

    from rank_sweep.track.runs import copy_run, end_run

    client = MlflowClient(ctx.tracking_uri)
    for key in decision.pruned:
        run_id = _child_run_id(arms[key])
        if run_id is None:
            log.warning("arm %s has no MLflow run to tag as pruned", key)
            continue
        tags = {
            C.TAG_STATUS: C.PRUNED,
            C.TAG_PRUNED_STEP: str(decision.step),
            C.TAG_PRUNE_REASON: decision.arms[key].reason[:5000],
            C.TAG_SWEEP_ID: ctx.sweep_id,
        }
        if (
            client.get_run(run_id).data.tags.get(C.TAG_SWEEP_ID) != ctx.sweep_id
            and ctx.parent_run_id
        ):
            # its rung was trained by another sweep (records reused): copy it under this one
            copy_run(ctx.tracking_uri, run_id, ctx.parent_run_id, tags)
        else:
            end_run(ctx.tracking_uri, run_id, tags, C.MLFLOW_RUN_STATUS[C.PRUNED])
    if ctx.parent_run_id:
        client.log_dict(ctx.parent_run_id, log_doc, "decisions.json")


def on_final(ctx: Any, arms: Mapping[str, DictConfig], log_doc: dict) -> None:
    if getattr(ctx, "tracking_uri", None) and ctx.parent_run_id:
        from mlflow.tracking import MlflowClient

        MlflowClient(ctx.tracking_uri).log_dict(ctx.parent_run_id, log_doc, "decisions.json")
