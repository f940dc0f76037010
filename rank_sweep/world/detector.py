"""The world's video detector: a small 3D conv net trained by the project to classify the
synthetic classes (base and target), plus two motion-probe classes (a frozen first frame
and time-shuffled frames), so its features depend on how things move, not only on how the
first frame looks: I2V samples share the real first frame, so an appearance-only detector
could not tell a model that learned the target motions from one that did not.

Saved as TorchScript with I3D's published call signature
`det(x_uint8_BCTHW, rescale=True, resize=True, return_features=True)`; the module carries
`detector_name`, `feature_dim`, `size` and `project_trained=True`, which the detector
loader reads (stamped `detector.pretrained=false`: it is no published network).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

DETECTOR_NAME = "rank_sweep_world_video"
STATIC, SHUFFLED = 8, 9  # probe classes after the 8 synthetic classes
NUM_CLASSES = 10


class TinyVideoNet(nn.Module):
    """uint8 [B, 3, T, H, W] -> features [B, 4*width] (or logits [B, NUM_CLASSES])."""

    def __init__(self, size: int = 32, width: int = 16, pretrained: bool = True) -> None:
        super().__init__()
        self.size = size
        self.feature_dim = 4 * width
        self.detector_name = DETECTOR_NAME
        self.random_init = not pretrained
        self.project_trained = True  # the loader stamps detector.pretrained=false for it
        w = width
        self.body = nn.Sequential(
            nn.Conv3d(3, w, 3, stride=(1, 2, 2), padding=1),
            nn.GroupNorm(4, w),
            nn.SiLU(),
            nn.Conv3d(w, 2 * w, 3, stride=(2, 2, 2), padding=1),
            nn.GroupNorm(4, 2 * w),
            nn.SiLU(),
            nn.Conv3d(2 * w, 4 * w, 3, stride=(2, 2, 2), padding=1),
            nn.GroupNorm(4, 4 * w),
            nn.SiLU(),
        )
        self.proj = nn.Linear(4 * w, 4 * w)  # the feature layer (no nonlinearity after it)
        self.head = nn.Linear(4 * w, NUM_CLASSES)

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
        return_features: bool = True,
    ) -> torch.Tensor:  # fmt: skip
        v = x.float()
        if rescale:  # uint8 [0, 255] -> [-1, 1], as the I3D TorchScript does
            v = v / 127.5 - 1.0
        if resize and (v.shape[-1] != self.size or v.shape[-2] != self.size):
            b, c, t, h, w = v.shape
            frames = v.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            frames = F.interpolate(
                frames, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
            v = frames.reshape(b, t, c, self.size, self.size).permute(0, 2, 1, 3, 4)
        h = self.body(v).mean(dim=(2, 3, 4))
        feats = self.proj(h)
        if return_features:
            return feats
        return self.head(F.silu(feats))


def probe_batch(
    videos: np.ndarray, labels: np.ndarray, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A quarter of the batch becomes motion probes: frozen first frame or shuffled time."""
    vids, labs = videos.copy(), labels.copy()
    n = len(vids)
    for i in gen.choice(n, size=max(1, n // 4), replace=False):
        if gen.random() < 0.5:
            vids[i] = vids[i, :1]
            labs[i] = STATIC
        else:
            vids[i] = vids[i, gen.permutation(vids.shape[1])]
            labs[i] = SHUFFLED
    return vids, labs


def train_detector(
    net: TinyVideoNet,
    videos: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch: int,
    lr: float,
    frames: int,
    gen: np.random.Generator,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Cross-entropy on random `frames`-frame windows; `videos` may mix real clips and VAE
    reconstructions (same labels) so VAE artifacts do not read as a different class."""
    from rank_sweep.world.fit import fit_classifier
    from rank_sweep.world.pools import windows

    def batch_loss(step: int) -> torch.Tensor:
        idx = gen.choice(len(videos), size=min(batch, len(videos)), replace=False)
        clips, labs = probe_batch(windows(videos[idx], frames, gen), labels[idx], gen)
        x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous()
        return F.cross_entropy(net(x, return_features=False), torch.from_numpy(labs))

    losses = fit_classifier(net, steps, lr, batch_loss, progress=progress)
    log.info("detector: loss %.3f -> %.3f over %d steps", losses[0], losses[-1], len(losses))
    return losses


@torch.no_grad()
def accuracy(net: TinyVideoNet, clips: np.ndarray, labels: np.ndarray) -> float:
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous()
    pred = net(x, return_features=False).argmax(1).numpy()
    return float((pred == labels).mean())
