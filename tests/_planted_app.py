"""A small Hydra app with planted learning curves, run through the REAL rank_sweep sweeper
and a real Hydra launcher (basic or joblib). It is also the sweeper's protocol module
(`hydra.sweeper.protocol=_planted_app`): arms, record paths, budget and the stop knob.

A job "trains" one step at a time from its checkpoint (a JSON file with the step), logs
every step it trains to `<state_root>/steps.log` (so a test can prove nothing was trained
twice), stops at `train.stop_at` or `train.steps`, and writes its rung record with
per-item values: planted curve + a per-item difficulty shared by every arm (paired) +
small arm-specific noise. `curve=tied` gives every arm identical values.

    python tests/_planted_app.py -m rank=4,8,16,32 hydra.sweep.dir=... state_root=...
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from rank_sweep.prune.rung import ArmInfo, RungRecord, read_record, record_file, write_record

N_ITEMS = 12


@dataclass
class TrainConf:
    steps: int = 8
    stop_at: Optional[int] = None


@dataclass
class PruneConf:
    pruner: str = "sha"
    rungs: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    eta: int = 2
    delta_min: float = 0.0
    confidence: float = 0.95
    rung_metric: str = "val_loss"
    storage: Optional[str] = None


@dataclass
class PlantedConf:
    defaults: list[Any] = field(
        default_factory=lambda: [{"override hydra/sweeper": "rank_sweep"}, "_self_"]
    )
    rank: int = 8
    method: str = "lora"  # lora | full (the baseline: never ranked)
    curve: str = "planted"  # planted | tied
    noise: float = 0.01
    slow: float = 0.0  # seconds per step, scaled per rank (slow starters in wall time)
    state_root: str = "state"
    sweep_name: str = "planted"
    train: TrainConf = field(default_factory=TrainConf)
    prune: PruneConf = field(default_factory=PruneConf)


ConfigStore.instance().store(name="planted", node=PlantedConf)


def curve(rank: int, step: int, kind: str) -> float:
    """Larger ranks start slower and end better; with `tied`, every rank is the same."""
    if kind == "tied":
        return 1.0 + math.exp(-step / 4.0)
    lr = math.log2(rank)
    floor = 1.0 - 0.05 * lr  # bigger rank, lower floor
    tau = 1.0 + 0.8 * lr  # bigger rank, slower start
    return floor + 1.5 * math.exp(-step / tau)


def item_values(rank: int, step: int, kind: str, noise: float) -> list[float]:
    base = random.Random(1234)
    difficulty = [base.gauss(0.0, 0.3) for _ in range(N_ITEMS)]  # shared: paired items
    r = random.Random(f"{rank}-{step}")
    eps = [r.gauss(0.0, noise) for _ in range(N_ITEMS)]
    if kind == "tied":
        eps = [0.0] * N_ITEMS
    return [curve(rank, step, kind) + d + e for d, e in zip(difficulty, eps)]


def _arm(cfg: DictConfig) -> str:
    return "full" if cfg.method == "full" else f"r{int(cfg.rank)}"


def _state(cfg: DictConfig) -> Path:
    return Path(cfg.state_root) / _arm(cfg)


# -- the sweeper's protocol ---------------------------------------------------------------
def describe(cfg: DictConfig) -> ArmInfo:
    full = cfg.method == "full"
    # The baseline ignores `rank`, so every `method=full rank=*` job is the same job.
    fp = f"{cfg.method}-{cfg.curve}" + ("" if full else f"-{int(cfg.rank)}")
    return ArmInfo(
        _arm(cfg), fp, full, {"method": str(cfg.method), "lora_rank": 0 if full else int(cfg.rank)}
    )


def record_path(cfg: DictConfig, step: int) -> Path:
    return record_file(_state(cfg), step)


def budget(cfg: DictConfig) -> int:
    return int(cfg.train.steps)


def stop_override(step: int) -> str:
    return f"train.stop_at={int(step)}"


def on_decision(ctx: Any, decision: Any, arms: Any, doc: dict) -> None:
    return None


def on_final(ctx: Any, arms: Any, doc: dict) -> None:
    return None


# -- the job ------------------------------------------------------------------------------
@hydra.main(config_path=None, config_name="planted", version_base="1.3")
def main(cfg: DictConfig) -> float:
    state = _state(cfg)
    state.mkdir(parents=True, exist_ok=True)
    ckpt = state / "ckpt.json"
    step = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    total = int(cfg.train.steps)
    stop = int(cfg.train.stop_at or total)
    rank = int(cfg.rank) if cfg.method == "lora" else 128
    kind = "planted" if cfg.method == "full" else str(cfg.curve)
    while step < stop:
        step += 1
        # Slow starters in wall time: the order in which jobs finish differs from launch order.
        time.sleep(float(cfg.slow) * ((rank * 7) % 5 + 1) / 5)
        with open(Path(cfg.state_root) / "steps.log", "a") as fh:
            fh.write(f"{_arm(cfg)} {step} {os.getpid()}\n")
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step}))
        tmp.replace(ckpt)
    path = record_file(state, step)
    if read_record(path) is None:
        values = item_values(rank, step, kind, float(cfg.noise))
        write_record(path, RungRecord(_arm(cfg), step, step >= total, {"val_loss": values}))
    return sum(item_values(rank, step, kind, float(cfg.noise))) / N_ITEMS


def run_many(argvs: list[list[str]]) -> None:
    """Several multiruns in one process (tests: Python and Hydra start once, not per run)."""
    import sys

    for argv in argvs:
        sys.argv = [sys.argv[0], *argv]
        main()


if __name__ == "__main__":
    many = os.environ.get("PLANTED_RUNS")  # a JSON list of argument lists
    if many:
        run_many(json.loads(many))
    else:
        main()
