"""Wan2.2 A14B's two experts as one module, and which expert(s) a job trains.

Wan2.2 I2V-A14B denoises with two 14B transformers: `transformer` (the high-noise expert)
for timesteps t >= boundary_ratio * 1000 and `transformer_2` (the low-noise expert) below,
exactly as `WanImageToVideoPipeline` switches them. `WanExperts` routes each sample by its
timestep, so the training loop, the validation loss and the sampler see one model.

A job trains one expert, the other, or both (`lora.experts` = high | low | both; full
fine-tuning reads the same key). Training draws timesteps only inside the trained
experts' range (`train_sigma_range`), so no step is spent on samples that reach only a
frozen expert; sampling always uses both experts, each in its own range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from rank_sweep.model.layout import ModelError

log = logging.getLogger(__name__)

EXPERT_CHOICES = ("both", "high", "low")
NUM_TRAIN_TIMESTEPS = 1000  # the schedulers' num_train_timesteps; timestep = sigma * 1000


@dataclass(frozen=True)
class Expert:
    name: str  # transformer (single-transformer models) | high_noise | low_noise
    attr: str  # pipeline component: transformer | transformer_2

    @property
    def subfolder(self) -> str:
        return self.attr

    def header(self) -> dict[str, str]:
        """safetensors header entries that tell a user how to load the file."""
        return {
            "rank_sweep.expert": self.name,
            "rank_sweep.load_into_transformer_2": str(self.attr == "transformer_2").lower(),
        }


SINGLE = Expert("transformer", "transformer")
HIGH = Expert("high_noise", "transformer")
LOW = Expert("low_noise", "transformer_2")


class WanExperts(torch.nn.Module):
    """High-noise `transformer` + low-noise `transformer_2`, switched at the boundary."""

    def __init__(
        self, transformer: torch.nn.Module, transformer_2: torch.nn.Module, boundary_ratio: float
    ):
        super().__init__()
        if not 0.0 < float(boundary_ratio) < 1.0:
            raise ModelError(f"boundary_ratio={boundary_ratio} must be in (0, 1)")
        self.transformer = transformer
        self.transformer_2 = transformer_2
        self.boundary_ratio = float(boundary_ratio)
        self.train_sigma_range: tuple[float, float] = (0.0, 1.0)

    @property
    def boundary_timestep(self) -> float:
        return self.boundary_ratio * NUM_TRAIN_TIMESTEPS

    @property
    def config(self):
        return self.transformer.config  # both experts share one architecture

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def blocks(self) -> list[torch.nn.Module]:
        """Every block of both experts: what FSDP shards one by one."""
        return [*self.transformer.blocks, *self.transformer_2.blocks]

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()
        self.transformer_2.enable_gradient_checkpointing()

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, **kwargs):
        # Per-token timesteps ([B, L], expand_timesteps) route by their largest value.
        t = timestep if timestep.ndim == 1 else timestep.amax(dim=1)
        high = t.float() >= self.boundary_timestep
        # Sharded experts need every rank in each forward: run both whenever distributed.
        both = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        if not both and bool(high.all()):
            return self.transformer(hidden_states=hidden_states, timestep=timestep, **kwargs)
        if not both and not bool(high.any()):
            return self.transformer_2(hidden_states=hidden_states, timestep=timestep, **kwargs)
        a = self.transformer(hidden_states=hidden_states, timestep=timestep, **kwargs)[0]
        b = self.transformer_2(hidden_states=hidden_states, timestep=timestep, **kwargs)[0]
        pick = high.view(-1, *([1] * (a.ndim - 1)))
        return (torch.where(pick, a, b),)


def expert_modules(model: torch.nn.Module) -> list[tuple[Expert, torch.nn.Module]]:
    if isinstance(model, WanExperts):
        return [(HIGH, model.transformer), (LOW, model.transformer_2)]
    return [(SINGLE, model)]


def select_experts(model: torch.nn.Module, which: str) -> list[tuple[Expert, torch.nn.Module]]:
    """The (expert, module) pairs `lora.experts=which` trains."""
    if which not in EXPERT_CHOICES:
        raise ModelError(
            f"lora.experts={which!r} is not supported; allowed: {', '.join(EXPERT_CHOICES)}"
        )
    pairs = expert_modules(model)
    if which == "both":
        return pairs
    if not isinstance(model, WanExperts):
        raise ModelError(
            f"lora.experts={which} needs a two-expert model (Wan2.2 A14B); this model has one "
            "transformer: use lora.experts=both"
        )
    return [pairs[0]] if which == "high" else [pairs[1]]


def set_train_range(model: torch.nn.Module, chosen: list[tuple[Expert, torch.nn.Module]]) -> None:
    """Record the sigma range the trained expert(s) cover (sigma = timestep / 1000)."""
    if not isinstance(model, WanExperts):
        return
    names = {e.name for e, _ in chosen}
    b = model.boundary_ratio
    model.train_sigma_range = {
        frozenset({"high_noise"}): (b, 1.0),
        frozenset({"low_noise"}): (0.0, b),
    }.get(frozenset(names), (0.0, 1.0))
    log.info("training experts %s on sigma range %s", sorted(names), model.train_sigma_range)


def trained_experts(model: torch.nn.Module) -> list[tuple[Expert, torch.nn.Module]]:
    return [
        (e, m) for e, m in expert_modules(model) if any(p.requires_grad for p in m.parameters())
    ]


def sigma_range_of(model: torch.nn.Module) -> tuple[float, float]:
    """The trained sigma range of a (possibly DeepSpeed-wrapped) model; (0, 1) by default."""
    inner = getattr(model, "module", model)
    return tuple(getattr(inner, "train_sigma_range", (0.0, 1.0)))  # type: ignore[return-value]


def restrict_sigmas(sigma: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Map sigmas from (0, 1) affinely into (lo, hi): the sampled distribution keeps its
    shape inside the expert's range (what musubi-tuner's min/max timestep does)."""
    if (lo, hi) == (0.0, 1.0):
        return sigma
    return lo + (hi - lo) * sigma
