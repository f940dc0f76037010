"""What a job is: its method, LoRA rank, effective alpha and scale, label and fingerprint,
made once from the config (`JobIdentity.from_config`) and passed along.

The fingerprint hashes the effective config: keys that do not change what is trained or
measured (tracking, sweep name, output dirs) are left out, and so are the pruning settings
and the pause knob `train.stop_at`: a job paused at a rung and resumed is the same job as
one trained straight through. For full fine-tuning the LoRA settings are irrelevant too,
so `-m finetune=lora,full lora.rank=4,8` names the full baseline once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rank_sweep.model.adapters import BASE_METHOD
from rank_sweep.paths import state_root
from rank_sweep.track import contract as C
from rank_sweep.utils.keys import content_key

_IGNORED_TOP = (
    "track",
    "sweep_name",
    "output_dir",
    "state_dir",
    "dry_run",
    "extras",
    "hydra",
    "plan",
)
FINGERPRINT_LEN = 16
BASE_LABEL = "base"  # run name / state dir of finetune=none
# Keys that change neither what is trained nor what is measured (disk policy, trust).
_IGNORED_NESTED = (("train", "keep_checkpoints"), ("eval", "trust_torchscript"))


def effective_config(cfg: DictConfig) -> dict[str, Any]:
    # Masked before resolving: a sweeper fingerprints job configs that still carry the
    # `hydra` node, whose runtime interpolations only resolve inside the job.
    kept = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in _IGNORED_TOP])
    data = OmegaConf.to_container(kept, resolve=True)
    assert isinstance(data, dict)
    data.pop("prune", None)  # the sweeper's business, not the job's
    data.get("train", {}).pop("stop_at", None)  # pausing is not a different run
    for group, key in _IGNORED_NESTED:
        data.get(group, {}).pop(key, None)
    if data["finetune"]["method"] == BASE_METHOD:  # nothing trained: LoRA knobs are moot
        data.pop("lora", None)
    elif data["finetune"]["method"] == "full":
        experts = data.pop("lora", {}).get("experts", "both")
        if experts != "both":  # full fine-tuning of one Wan2.2 expert is its own job
            data["finetune"]["experts"] = experts
    return data


def fingerprint(cfg: DictConfig) -> str:
    return content_key(effective_config(cfg), FINGERPRINT_LEN)


@dataclass(frozen=True)
class JobIdentity:
    method: str  # lora | full | none (the untrained base)
    rank: int | None  # None for full fine-tuning
    alpha: float | None  # the lora_alpha peft receives (alpha_mode applied)
    alpha_mode: str | None  # fixed | ratio | rslora
    use_rslora: bool
    scale: float | None  # the update scale peft applies
    label: str  # `lora-r8` | `full` | `base`: run names, state dirs, log lines
    fingerprint: str

    @classmethod
    def from_config(cls, cfg: DictConfig) -> JobIdentity:
        method = str(cfg.finetune.method)
        fp = fingerprint(cfg)
        if method != "lora":
            label = BASE_LABEL if method == BASE_METHOD else method
            return cls(method, None, None, None, False, None, label, fp)
        from rank_sweep.model.adapters import effective_scale, lora_alpha_for  # peft's rule

        rank = int(cfg.lora.rank)
        mode = str(cfg.lora.alpha_mode)
        alpha, rslora = lora_alpha_for(
            rank, float(cfg.lora.alpha), mode, float(cfg.lora.alpha_ratio)
        )
        scale = effective_scale(alpha, rank, rslora)
        return cls(method, rank, alpha, mode, rslora, scale, f"lora-r{rank}", fp)

    @property
    def is_lora(self) -> bool:
        return self.method == "lora"

    @property
    def is_base(self) -> bool:
        """The untrained base (finetune=none): scored, never trained."""
        return self.method == BASE_METHOD

    @property
    def weights_dir(self) -> str:
        """Folder of the trained weights in the run dir and among the run's artifacts."""
        return C.weights_dir(self.method)

    def describe(self) -> str:
        """`lora rank=8 alpha=16 (ratio, scale 2)` or `full`, for plan and log lines."""
        if self.is_base:
            return "base, no fine-tune"
        if not self.is_lora:
            return self.method
        return f"lora rank={self.rank} alpha={self.alpha:g} ({self.alpha_mode}, scale {self.scale:.3g})"

    def tags(self) -> dict[str, str]:
        """The identity's MLflow tags (method, rank, effective alpha and scale, fingerprint)."""
        return {
            C.TAG_METHOD: self.method,
            C.TAG_LORA_RANK: "" if self.rank is None else str(self.rank),
            C.TAG_LORA_ALPHA: "" if self.alpha is None else f"{self.alpha:g}",
            C.TAG_LORA_ALPHA_MODE: self.alpha_mode or "",
            C.TAG_LORA_SCALE: "" if self.scale is None else f"{self.scale:g}",
            C.TAG_FINGERPRINT: self.fingerprint,
        }

    def trial_params(self) -> dict[str, Any]:
        """The fixed params of the job's Optuna trial."""
        return {C.TRIAL_PARAM_METHOD: self.method, C.TRIAL_PARAM_RANK: self.rank or 0}

    def summary(self) -> dict[str, Any]:
        """The identity part of summary.json."""
        return {
            "method": self.method,
            "rank": self.rank,
            "alpha": self.alpha,
            "alpha_mode": self.alpha_mode,
            "lora_scale": self.scale,
            "fingerprint": self.fingerprint,
        }

    def lora_meta(self) -> dict[str, Any] | None:
        """Bookkeeping stored with a saved adapter (None for full fine-tuning)."""
        if not self.is_lora:
            return None
        return {"rank": self.rank, "alpha": self.alpha, "alpha_mode": self.alpha_mode}

    def state_dir(self, cfg: DictConfig) -> Path:
        """Resumable state of this job (checkpoint, run ids): the same dir on every rerun."""
        return state_root(cfg.get("state_dir")) / f"{self.label}-{self.fingerprint}"


def state_dir(cfg: DictConfig) -> Path:
    """The job's resumable state dir (see JobIdentity.state_dir), from its config alone."""
    return JobIdentity.from_config(cfg).state_dir(cfg)
