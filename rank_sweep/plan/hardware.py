"""GPU figures the plan divides FLOPs by: vendor peak numbers, an assumed utilization,
and (when `benchmarks/bench_gpu.py` has run on a GPU) the utilization it measured.

Utilization here is executed FLOPs (activation-checkpoint recompute included) over
peak dense bf16 FLOP/s x seconds. The defaults are calibrated on public Wan2.1 I2V-14B
figures at 480p x 81 frames: ~5.9 PFLOP per training sample in ~13 s on an H100 and
~40 s on an A100 (0.45); ~366 s per 40-step CFG sample on an H200 (0.37).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rank_sweep.paths import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_TRAIN_UTIL = 0.45
DEFAULT_SAMPLE_UTIL = 0.37
FIGURES_PATH = REPO_ROOT / "benchmarks" / "gpu_figures.json"


@dataclass(frozen=True)
class GpuSpec:
    kind: str
    name: str
    peak_bf16_flops: float  # dense tensor-core bf16, no sparsity (datasheet)
    memory_gb: float  # usable HBM, decimal GB as nvidia-smi's total / 1e9
    # Utilization assumed (or measured) for training steps and for I2V sampling.
    train_util: float = DEFAULT_TRAIN_UTIL
    sample_util: float = DEFAULT_SAMPLE_UTIL
    source: str = "assumed (public Wan2.1 14B figures)"


GPUS: dict[str, GpuSpec] = {
    "a100_40gb": GpuSpec("a100_40gb", "NVIDIA A100 40GB", 312e12, 40.0),
    "a100_80gb": GpuSpec("a100_80gb", "NVIDIA A100 80GB", 312e12, 80.0),
    "h100": GpuSpec("h100", "NVIDIA H100 80GB SXM", 989e12, 80.0),
    "h200": GpuSpec("h200", "NVIDIA H200 141GB", 989e12, 141.0),
    "cpu": GpuSpec("cpu", "CPU (tiny model only)", 1e11, 16.0, 0.3, 0.3),
}


def gpu_kind_of(name: str) -> str | None:
    """Map a device name (torch.cuda.get_device_name) or a SLURM constraint to a kind."""
    n = name.lower()
    if "h200" in n:
        return "h200"
    if "h100" in n:
        return "h100"
    if "a100" in n:
        return "a100_40gb" if "40" in n else "a100_80gb"
    if n == "cpu":
        return "cpu"
    return None


@dataclass
class Figures:
    """Measured figures per GPU kind, written by bench_gpu.py (device recorded)."""

    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | str | None = None) -> Figures:
        p = Path(path) if path else FIGURES_PATH
        if not p.exists():
            return cls(path=None)
        data = json.loads(p.read_text())
        return cls(by_kind=dict(data.get("gpus", {})), path=p)


def resolve_gpu(
    kind: str,
    figures: Figures | None = None,
    train_util: float | None = None,
    sample_util: float | None = None,
) -> GpuSpec:
    """The spec of `kind` with utilization from (in order) explicit values, the bench's
    saved figures for that kind, or the defaults."""
    if kind not in GPUS:
        raise ValueError(f"plan.gpu={kind!r} is not known; allowed: {', '.join(GPUS)}")
    spec = GPUS[kind]
    tu, su, source = spec.train_util, spec.sample_util, spec.source
    measured = (figures.by_kind.get(kind) if figures else None) or {}
    if measured:
        tu = float(measured.get("train_util", tu))
        su = float(measured.get("sample_util", su))
        source = f"measured by bench_gpu on {measured.get('device', kind)} ({figures.path})"
    if train_util is not None or sample_util is not None:
        tu = train_util if train_util is not None else tu
        su = sample_util if sample_util is not None else su
        source = "given (plan.train_util / plan.sample_util)"
    return GpuSpec(spec.kind, spec.name, spec.peak_bf16_flops, spec.memory_gb, tu, su, source)


def save_figures(kind: str, entry: dict[str, Any], path: Path | str | None = None) -> Path:
    """Merge one GPU kind's measured figures into the JSON the plan reads."""
    p = Path(path) if path else FIGURES_PATH
    data: dict[str, Any] = json.loads(p.read_text()) if p.exists() else {}
    data.setdefault("gpus", {})[kind] = entry
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(p)
    return p
