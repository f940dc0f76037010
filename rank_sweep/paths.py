"""Where things live: the repo root, the cache for embedded-default assets, the stores."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
EXPERIMENTS_DIR = REPO_ROOT / "experiments"


def cache_dir() -> Path:
    """Cache for the tiny model, synthetic data, detectors, latents and real-feature stats.

    `RANK_SWEEP_CACHE` moves it (tests point it at a temp dir); default `<repo>/.cache`.
    """
    return Path(os.environ.get("RANK_SWEEP_CACHE", REPO_ROOT / ".cache")).resolve()
