"""The tracking contract: every MLflow tag, metric and param name and every Optuna attribute
that rank_sweep writes and reads, defined once.

Users build dashboards and queries on these names, so they are stable; writers (job
reporter, sweep callback, tracker), readers (report, notebook, benchmarks) and the tests'
fake-run writers all import them from here instead of spelling them.
"""

from __future__ import annotations

from collections.abc import Iterable

# -- tags -----------------------------------------------------------------------------------
TAG_PREFIX = "rank_sweep."
TAG_ROLE = "rank_sweep.role"  # "sweep" on a sweep's parent run; absent on job runs
TAG_SWEEP_ID = "rank_sweep.sweep_id"
TAG_SWEEP_NAME = "rank_sweep.sweep_name"
TAG_OVERRIDES = "rank_sweep.overrides"  # the multirun's command-line overrides (parent)
TAG_PRUNER = "rank_sweep.pruner"  # prune.pruner of the sweep (parent)
TAG_METHOD = "rank_sweep.method"  # lora | full
TAG_LORA_RANK = "rank_sweep.lora_rank"  # "" for full fine-tuning
TAG_LORA_ALPHA = "rank_sweep.lora_alpha"  # the alpha peft received (after alpha_mode)
TAG_LORA_ALPHA_MODE = "rank_sweep.lora_alpha_mode"  # fixed | ratio | rslora
TAG_LORA_SCALE = "rank_sweep.lora_scale"  # the update scale peft applies: alpha/r or /sqrt(r)
TAG_MODEL = "rank_sweep.model"
TAG_DATASET = "rank_sweep.dataset"
TAG_STATUS = "rank_sweep.status"  # see STATUSES
TAG_PRUNED_STEP = "rank_sweep.pruned_step"
TAG_PRUNE_REASON = "rank_sweep.reason"  # why the sweeper pruned the run (paired figures)
TAG_PLATEAU_STEP = "rank_sweep.plateau_step"  # the step an early stop on a plateau ended it
TAG_RECIPE = "rank_sweep.recipe"  # one_stage | two_stage | <n>_stage
TAG_STAGES = "rank_sweep.stages"  # name:view:start-end|... (global steps)
TAG_ERROR = "rank_sweep.error"
TAG_FINGERPRINT = "rank_sweep.fingerprint"  # job identity: same value = same job
TAG_REUSED_FROM = "rank_sweep.reused_from"  # run id that did the work of a reused job
TAG_RESUMES = "rank_sweep.resumes"  # how often a killed job's run was re-opened
TAG_DETECTOR_PRETRAINED = "detector.pretrained"  # "false": numbers only compare these runs
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests children under it
TAG_RUN_NAME = "mlflow.runName"  # MLflow's own tag
MLFLOW_TAG_PREFIX = "mlflow."  # MLflow's system tags (not copied between runs)
# Protocol field `detector.<video|frame>.weights` (stamped with every FVD/KID): where the
# detector's weights came from. `random` = seeded random init, which compares pixel
# statistics rather than quality; the report names the metrics that rest on one.
WEIGHTS_FIELD = "weights"
WEIGHTS_PUBLISHED = "published"
WEIGHTS_PROJECT = "project-trained"
WEIGHTS_RANDOM = "random"

ROLE_SWEEP = "sweep"

# -- methods (TAG_METHOD values; finetune.method) ----------------------------------------------
METHOD_LORA = "lora"
METHOD_FULL = "full"
METHOD_NONE = "none"  # the untrained base, scored only: the report's "base, no fine-tune" row

# -- statuses (TAG_STATUS values) --------------------------------------------------------------
COMPLETED = "completed"  # ran its full budget
PRUNED = "pruned"  # stopped by the sweep's pruning decision
FAILED = "failed"  # raised; TAG_ERROR says why
STOPPED_PLATEAU = "stopped_plateau"  # stopped by its own plateau rule (a job setting)
PAUSED = "paused"  # stopped at a rung, waiting for the sweeper's decision
RUNNING = "running"  # live, or killed before it could write a final status

FINAL_STATUSES = (COMPLETED, PRUNED, FAILED, STOPPED_PLATEAU)
STATUSES = (*FINAL_STATUSES, PAUSED, RUNNING)
# A finished run another job may reuse instead of training again: it ended for reasons of
# its own config only. A pruned run is not reusable: its stop was decided against the
# other arms of one sweep, which another sweep need not share.
REUSABLE_STATUSES = (COMPLETED, STOPPED_PLATEAU)
# MLflow's run status for each rank_sweep status a run is ended with. A pruned run ended as
# designed: FINISHED (KILLED reads as a crash in the UI); the status tag says pruned.
MLFLOW_RUN_STATUS = {
    COMPLETED: "FINISHED",
    STOPPED_PLATEAU: "FINISHED",
    PRUNED: "FINISHED",
    FAILED: "FAILED",
    PAUSED: "SCHEDULED",  # ended for now, resumed when the sweeper keeps it
}


def status_count_tag(status: str) -> str:
    """Tag on a sweep's parent with the number of its jobs in `status`."""
    return f"{TAG_PREFIX}n_{status}"


def run_status(tags: dict[str, str]) -> str:
    """rank_sweep status of a run from its tags; one without a known status is `running`."""
    status = tags.get(TAG_STATUS, RUNNING)
    return status if status in STATUSES else RUNNING


# -- metrics ----------------------------------------------------------------------------------
TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_STEPS_DONE = "train/steps_done"
VAL_LOSS = "val/loss"
TRAINABLE_PARAMS = "model/trainable_params"
TOTAL_PARAMS = "model/total_params"
STEP_TIME_S = "perf/step_time_s"  # median over steps without warm-up (train/perf.py)
STEP_TIME_P10_S = "perf/step_time_p10_s"
STEP_TIME_P90_S = "perf/step_time_p90_s"
PEAK_MEM_MB = "perf/peak_mem_mb"  # this job's own peak (high-water mark reset per job)
DATA_TRAIN_CLIPS = "data/train_clips"
DATA_SKIPPED_CLIPS = "data/skipped_clips"

# Per-dataset metrics are `<name>/<dataset>`; intervals `<name>_ci_lo/<dataset>`.
FVD = "fvd"
KID = "kid"
KVD = "kvd"
# which detector's features each metric is measured on (its stamp: `detector.<kind>.*`)
DETECTOR_OF = {FVD: "video", KID: "frame", KVD: "video"}
CI_SIDES = ("lo", "hi")
KID_STD = "kid_std"


def ci_name(metric: str, side: str) -> str:
    """`fvd`, `lo` -> `fvd_ci_lo`: the name of one end of a metric's 95% interval."""
    if side not in CI_SIDES:
        raise ValueError(f"side={side!r} not allowed; use one of {', '.join(CI_SIDES)}")
    return f"{metric}_ci_{side}"


# Every per-dataset metric name the report keeps (last logged value = final value).
DATASET_METRICS = (
    FVD,
    KID,
    ci_name(FVD, "lo"),
    ci_name(FVD, "hi"),
    ci_name(KID, "lo"),
    ci_name(KID, "hi"),
    KID_STD,
)


def dataset_metric(name: str, dataset: str) -> str:
    """`fvd`, `ucf101` -> `fvd/ucf101`."""
    return f"{name}/{dataset}"


def ci_metric(name: str, side: str, dataset: str) -> str:
    """`fvd`, `lo`, `ucf101` -> `fvd_ci_lo/ucf101`."""
    return dataset_metric(ci_name(name, side), dataset)


def parse_dataset_metric(key: str) -> tuple[str, str] | None:
    """`fvd_ci_lo/ucf101` -> (`fvd_ci_lo`, `ucf101`); None for keys that are not per-dataset
    metrics (`train/loss`, `val/loss`, ...). The dataset may itself contain `/` or `.`."""
    name, sep, dataset = key.partition("/")
    if not sep or not dataset or name not in DATASET_METRICS:
        return None
    return name, dataset


def metric_datasets(keys: Iterable[str], names: tuple[str, ...] = (FVD, KID)) -> list[str]:
    """Datasets that have a metric in `names` among `keys` (metric keys or table columns)."""
    found = set()
    for key in keys:
        parsed = parse_dataset_metric(str(key))
        if parsed is not None and parsed[0] in names:
            found.add(parsed[1])
    return sorted(found)


# -- params -----------------------------------------------------------------------------------
PARAM_DEVICE = "device"  # device type the job ran on (cpu | cuda)
PARAM_FINGERPRINT = "job.fingerprint"
PROTOCOL_PREFIX = "protocol."


def protocol_param(dataset: str, field: str) -> str:
    """`ucf101`, `eval.n_real` -> `protocol.ucf101.eval.n_real` (the stamp of one dataset)."""
    return f"{PROTOCOL_PREFIX}{dataset}.{field}"


def parse_protocol_param(key: str, datasets: Iterable[str] = ()) -> tuple[str, str] | None:
    """`protocol.<dataset>.<field>` -> (dataset, field); None for other keys.

    A dataset name may contain dots (`kinetics.v2`), so the split is not by position: the
    longest of the known `datasets` that prefixes the rest wins; only when none does is the
    first dotted part taken as the dataset.
    """
    if not key.startswith(PROTOCOL_PREFIX):
        return None
    rest = key[len(PROTOCOL_PREFIX) :]
    for ds in sorted(set(datasets), key=len, reverse=True):
        if ds and rest.startswith(ds + ".") and len(rest) > len(ds) + 1:
            return ds, rest[len(ds) + 1 :]
    dataset, sep, field = rest.partition(".")
    if not sep or not dataset or not field:
        return None
    return dataset, field


def protocol_fields(keys: Iterable[str], datasets: Iterable[str] = ()) -> dict[str, list[str]]:
    """dataset -> sorted stamp fields found among param keys / table columns."""
    known = list(datasets)
    out: dict[str, set[str]] = {}
    for key in keys:
        parsed = parse_protocol_param(str(key), known)
        if parsed is not None:
            out.setdefault(parsed[0], set()).add(parsed[1])
    return {ds: sorted(fields) for ds, fields in sorted(out.items())}


# -- artifacts ----------------------------------------------------------------------------------
# Where each method's trained weights go, in the run dir and among the run's artifacts.
WEIGHTS_DIR = {METHOD_LORA: "adapter", METHOD_FULL: "model", METHOD_NONE: ""}  # none: no weights
RUNGS_ARTIFACT_DIR = "rungs"  # a completed run's final rung record, for sweeps that reuse it
SAMPLES_DIR = "samples"  # sample videos (mp4) of each eval
SUMMARY_FILE = "summary.json"  # the job's summary in its run dir (also an artifact)
CONFIG_FILE = "config.yaml"  # the resolved config in its run dir (also an artifact)


def weights_dir(method: str) -> str:
    try:
        return WEIGHTS_DIR[method]
    except KeyError:
        raise ValueError(
            f"finetune.method={method!r} not allowed; use one of {' | '.join(WEIGHTS_DIR)}"
        ) from None


# -- Optuna -----------------------------------------------------------------------------------
TRIAL_PARAM_METHOD = "method"
TRIAL_PARAM_RANK = "lora_rank"
TRIAL_ATTR_FINGERPRINT = "fingerprint"
