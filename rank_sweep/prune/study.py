"""The Optuna study of a sweep: storage, pruner, open/create.

hydra-optuna-sweeper is not used (it cannot prune and pins optuna<3): the multirun
callback creates the study, each job adds its own trial. The pruner is not stored in
the study, so every opener passes it again.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna

from rank_sweep.paths import optuna_storage
from rank_sweep.prune.decide import Decision
from rank_sweep.prune.schedule import ALL_PRUNERS
from rank_sweep.track.store import enable_wal, sqlite_path

log = logging.getLogger(__name__)

PRUNERS = ALL_PRUNERS
SQLITE_TIMEOUT_S = 60  # busy wait before "database is locked"; parallel jobs write briefly


def make_pruner(prune_cfg: Any) -> optuna.pruners.BasePruner:
    """asha -> SuccessiveHalving (async: prunes while trials run in parallel),
    median -> MedianPruner (only compares against completed trials), none and sha ->
    NopPruner (under `sha` the project's sweeper decides, never a job)."""
    name = prune_cfg.pruner
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=int(prune_cfg.min_resource),
            reduction_factor=int(prune_cfg.reduction_factor),
            min_early_stopping_rate=0,
        )
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(prune_cfg.n_startup_trials),
            n_warmup_steps=int(prune_cfg.n_warmup_steps),
        )
    if name in ("none", "sha"):
        return optuna.pruners.NopPruner()
    raise ValueError(f"prune.pruner={name!r} not allowed; use one of {' | '.join(PRUNERS)}")


def default_storage() -> str:
    return optuna_storage()


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """`journal:///abs/path.log` (file journal, for NFS), `sqlite:///path` (one machine),
    or any SQLAlchemy URL (PostgreSQL/MySQL for clusters)."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal://")
        if not path:
            raise ValueError(f"prune.storage={url!r}: journal:///<path>.log needs a file path")
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if url.startswith("sqlite:"):
        db = sqlite_path(url)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        from rank_sweep.locks import store_lock

        with store_lock(url, f"Optuna store {url}"):  # table creation/migration, once
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
            )
            if db is not None:
                enable_wal(db)
        return storage
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    raise ValueError(
        f"prune.storage={url!r} not understood; use sqlite:///<path>.db, "
        "journal:///<path>.log or an RDB URL like postgresql://user@host/db"
    )


def open_study(
    storage_url: str | optuna.storages.BaseStorage,
    study_name: str,
    pruner: optuna.pruners.BasePruner,
    create: bool,
) -> optuna.Study:
    """Load (or, with `create`, create if missing) a minimizing study with `pruner`."""
    storage = make_storage(storage_url) if isinstance(storage_url, str) else storage_url
    # Every param of a job is fixed, so the sampler never samples: a cheap one is enough.
    sampler = optuna.samplers.RandomSampler(seed=0)
    if create:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="minimize",
            pruner=pruner,
            sampler=sampler,
            load_if_exists=True,
        )
    else:
        try:
            study = optuna.load_study(
                study_name=study_name, storage=storage, pruner=pruner, sampler=sampler
            )
        except KeyError:
            raise KeyError(
                f"Optuna study {study_name!r} not found in {storage_url}; the multirun "
                "callback creates it (or call open_study(..., create=True))"
            ) from None
    if study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise ValueError(
            f"Optuna study {study_name!r} exists but maximizes; the objective is minimized"
        )
    return study


# -- decisions of the synchronous sweeper, stored with the study -----------------------------
DECISION_ATTR = "rank_sweep.decision.rung{}"
FINAL_ATTR = "rank_sweep.final"


def store_decision(study: optuna.Study, decision: Decision) -> None:
    """Keep a rung decision in the study (user attr), where a rerun finds and replays it."""
    study.set_user_attr(DECISION_ATTR.format(decision.rung), decision.to_dict())


def stored_decisions(study: optuna.Study) -> dict[int, Decision]:
    prefix = DECISION_ATTR.format("")
    out = {}
    for key, value in study.user_attrs.items():
        if key.startswith(prefix):
            d = Decision.from_dict(value)
            out[d.rung] = d
    return out
