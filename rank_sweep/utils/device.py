"""One device picker for jobs, distributed workers and detectors."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")  # what the `device` config key may say


def pick_device(
    requested: str | torch.device | None = "auto", local_rank: int = 0, *, set_current: bool = False
) -> torch.device:
    """`auto`/None: this process's GPU (cuda:<local_rank>) when CUDA is visible, else CPU;
    `cpu`; `cuda` (an error when no GPU is visible); or an explicit device like `cuda:1`.
    `set_current` makes a chosen GPU the current CUDA device (distributed workers)."""
    if isinstance(requested, torch.device):
        device = requested
    elif requested in (None, "auto"):
        device = (
            torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        )
    elif requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but no CUDA device is visible")
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device(requested)
    if set_current and device.type == "cuda":
        torch.cuda.set_device(device)
    return device
