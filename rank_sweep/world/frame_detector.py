"""The world's frame detector, for KID: a small 2D conv net trained by the project to
classify single frames of the 8 synthetic classes (real frames and their VAE
reconstructions, same labels).

Why the world needs one: KID on the random-init Inception measures pixel statistics, and in
this world it scored the untrained base best and got worse with training (session 7,
RESULTS.md). Features trained on the classes respond to what a frame shows (which object,
its colours and place): the base now scores last, but the fine-tuned ranks, which differ in
motion, are ordered against FVD (benchmarks/RESULTS.md, session 8): compare ranks on FVD.

Saved as TorchScript with the FID Inception's call signature (NVIDIA's
`inception-2015-12-05.pt`): `det(x_uint8_NCHW, return_features=True) -> [N, D]`. The module
carries `detector_name`, `feature_dim`, `size` and `project_trained=True`, which the
detector loader reads (stamped `pretrained=false`, `weights: project-trained`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

FRAME_DETECTOR_NAME = "rank_sweep_world_frame"
FRAME_CLASSES = 8  # the synthetic classes of both domains (no motion probes: one frame)


class TinyFrameNet(nn.Module):
    """uint8 [N, 3, H, W] -> features [N, 4*width] (or logits [N, FRAME_CLASSES])."""

    def __init__(self, size: int = 32, width: int = 16) -> None:
        super().__init__()
        self.size = size
        self.feature_dim = 4 * width
        self.detector_name = FRAME_DETECTOR_NAME
        self.random_init = False
        self.project_trained = True  # the loader stamps pretrained=false for it
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.GroupNorm(4, w),
            nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.GroupNorm(4, 2 * w),
            nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),
            nn.GroupNorm(4, 4 * w),
            nn.SiLU(),
        )
        self.proj = nn.Linear(4 * w, 4 * w)  # the feature layer (no nonlinearity after it)
        self.head = nn.Linear(4 * w, FRAME_CLASSES)

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        v = x.float() / 127.5 - 1.0  # uint8 in, as the published Inception TorchScript takes
        if v.shape[-1] != self.size or v.shape[-2] != self.size:
            v = F.interpolate(v, size=(self.size, self.size), mode="bilinear", align_corners=False)
        feats = self.proj(self.body(v).mean(dim=(2, 3)))
        if return_features:
            return feats
        return self.head(F.silu(feats))


def _frames(videos: np.ndarray, labels: np.ndarray, n: int, gen: np.random.Generator):
    """`n` random frames (any time index) of random videos, with their videos' labels."""
    vid = gen.integers(0, len(videos), size=n)
    t = gen.integers(0, videos.shape[1], size=n)
    return videos[vid, t], labels[vid]


def train_frame_detector(
    net: TinyFrameNet,
    videos: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch: int,
    lr: float,
    gen: np.random.Generator,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Cross-entropy on random single frames of uint8 videos [N, T, H, W, 3]."""
    from rank_sweep.world.fit import fit_classifier

    def batch_loss(step: int) -> torch.Tensor:
        frames, labs = _frames(videos, labels, batch, gen)
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
        return F.cross_entropy(net(x, return_features=False), torch.from_numpy(labs))

    losses = fit_classifier(net, steps, lr, batch_loss, progress=progress)
    log.info("frame detector: loss %.3f -> %.3f over %d steps", losses[0], losses[-1], len(losses))
    return losses


@torch.no_grad()
def frame_accuracy(net: TinyFrameNet, videos: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy over every frame of uint8 videos [N, T, H, W, 3] (each frame its video's label)."""
    n, t = videos.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(videos.reshape(n * t, *videos.shape[2:])))
    pred = net(x.permute(0, 3, 1, 2).contiguous(), return_features=False).argmax(1).numpy()
    return float((pred == np.repeat(labels, t)).mean())
