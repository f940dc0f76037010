"""Random state that depends only on the config.

Library code that needs randomness for its own purpose (writing the tiny model or a
random-init detector, building the embedded world) runs inside `forked_rng`, so the
caller's global RNG is exactly as it was; what a job draws (LoRA init, dropout) comes from
states seeded from `train.seed` right before use. A cache hit or miss therefore never
changes a result: empty-cache and warm-cache runs give bitwise-equal adapters.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 63-bit seed per (seed, purpose): independent streams, never Python's hash."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seed_global(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's legacy global state and `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def forked_rng(seed: int | None = None) -> Iterator[None]:
    """Run a block on a private copy of the global RNGs, restored afterwards; with `seed`,
    the block starts from that seed (the same draws whatever ran before it)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                seed_global(seed)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
