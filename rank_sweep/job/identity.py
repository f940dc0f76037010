"""What makes two jobs the same job: a fingerprint of the effective config.

Keys that do not change what is trained or measured (tracking, sweep name, output dirs)
are left out; for full fine-tuning the LoRA and pruning settings are irrelevant too, so
`-m finetune=lora,full lora.rank=4,8` runs the full baseline once and reuses it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rank_sweep.paths import cache_dir

_IGNORED_TOP = ("track", "sweep_name", "output_dir", "state_dir", "dry_run", "extras", "hydra")


def effective_config(cfg: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    for key in _IGNORED_TOP:
        data.pop(key, None)
    if data["finetune"]["method"] == "full":
        experts = data.pop("lora", {}).get("experts", "both")
        if experts != "both":  # full fine-tuning of one Wan2.2 expert is its own job
            data["finetune"]["experts"] = experts
        data.pop("prune", None)  # the baseline is never pruned
    return data


def fingerprint(cfg: DictConfig) -> str:
    blob = json.dumps(effective_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def state_dir(cfg: DictConfig) -> Path:
    """Resumable state of this job (checkpoint, run ids): the same dir on every rerun."""
    root = Path(cfg.state_dir) if cfg.get("state_dir") else cache_dir() / "jobs"
    return root / f"{job_label(cfg)}-{fingerprint(cfg)}"


def job_label(cfg: DictConfig) -> str:
    if cfg.finetune.method == "full":
        return "full"
    return f"lora-r{cfg.lora.rank}"
