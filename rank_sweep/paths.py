"""Every location, defined once: the repo, the cache, job state, reports, and the stores.

The MLflow store is chosen the same way for jobs, the sweep callback, the report and
`make ui` (`python -m rank_sweep.paths tracking-uri`): an explicit `track.uri` /
`--tracking-uri`, else `$RANK_SWEEP_TRACKING_URI`, else a SQLite file beside the repo.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
EXPERIMENTS_DIR = REPO_ROOT / "experiments"

ENV_CACHE = "RANK_SWEEP_CACHE"
ENV_TRACKING_URI = "RANK_SWEEP_TRACKING_URI"


def cache_dir() -> Path:
    """Cache for the tiny model, synthetic data, detectors, latents and real-feature stats.

    `RANK_SWEEP_CACHE` moves it (tests point it at a temp dir); default `<repo>/.cache`.
    """
    return Path(os.environ.get(ENV_CACHE, REPO_ROOT / ".cache")).resolve()


def latents_dir() -> Path:
    """Precomputed VAE latents and encoder embeddings, one subdir per content key."""
    return cache_dir() / "latents"


def state_root(configured: str | None = None) -> Path:
    """Resumable job state (checkpoints, run ids): `state_dir=` if set, else the cache."""
    return Path(configured) if configured else cache_dir() / "jobs"


def reports_dir() -> Path:
    """Where `python -m rank_sweep.report` writes `<sweep id>/` by default."""
    return REPO_ROOT / "reports"


def tracking_uri(configured: str | None = None) -> str:
    """The MLflow store: `configured` (track.uri, --tracking-uri), else
    `$RANK_SWEEP_TRACKING_URI`, else `sqlite:///<repo>/mlflow.db`."""
    return configured or os.environ.get(ENV_TRACKING_URI) or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def optuna_storage(configured: str | None = None) -> str:
    """The Optuna storage: `configured` (prune.storage), else `sqlite:///<repo>/optuna.db`."""
    return configured or f"sqlite:///{REPO_ROOT / 'optuna.db'}"


JOB_DIRNAME_MAX = 120  # one path component must stay under the filesystem's 255 bytes


def job_dirname(overrides: str, limit: int = JOB_DIRNAME_MAX) -> str:
    """A job's dir name from its overrides (Hydra's override_dirname), cut to `limit`
    bytes (the filesystem counts bytes, not characters) with a hash of the whole so two
    long names never share a dir: a sweep with many overrides otherwise fails at mkdir
    with "File name too long"."""
    raw = overrides.encode()
    if len(raw) <= limit:
        return overrides
    digest = hashlib.sha1(raw).hexdigest()[:10]
    return f"{raw[: limit - 11].decode(errors='ignore')}-{digest}"


UI_URL = "http://127.0.0.1:5000"  # where `make ui` serves MLflow


def ui_runs_url(experiment: str = "rank_sweep") -> str:
    """The page `make ui` should be opened on: the experiment's runs table."""
    from rank_sweep.track.store import experiment_id_of, runs_page

    return runs_page(UI_URL, experiment_id_of(tracking_uri(), experiment))


if __name__ == "__main__":  # `make ui` / `make optuna-ui` ask here which store to open
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    stores = {"tracking-uri": tracking_uri, "optuna-storage": optuna_storage, "ui-url": ui_runs_url}
    if what not in stores:
        sys.exit(f"usage: python -m rank_sweep.paths {{{' | '.join(stores)}}}")
    sys.stdout.write(stores[what]() + "\n")
