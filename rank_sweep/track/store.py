"""Where MLflow keeps runs and artifacts, and creating that store once.

MLflow 3 refuses the file store, so the default (`paths.tracking_uri`) is a SQLite DB
beside the repo with an artifact dir next to it (an absolute location: MLflow's own default `./mlruns` would
follow the current dir of whichever job created the experiment). Teams point
`track.uri` at an `http://` server, which then decides where artifacts go.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from rank_sweep.track.retry import with_lock_retry

log = logging.getLogger(__name__)

_ensured: dict[tuple[str, str], str] = {}


def sqlite_path(url: str) -> Path | None:
    """The DB file of a `sqlite:///path` URL (query string dropped); None for other URLs."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


def enable_wal(db: Path) -> None:
    """Switch a SQLite file to write-ahead logging: readers stop blocking the writer.

    The mode is stored in the file, so doing it once (before parallel jobs) is enough.
    WAL needs shared memory, which is why SQLite stores are for one machine only.
    """
    con = sqlite3.connect(str(db), timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def artifact_root_for(uri: str) -> str | None:
    """Artifact location for a new experiment: `mlartifacts/` beside a SQLite DB; None
    (the server's or MLflow's default) for http(s) and other databases."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / "mlartifacts").as_uri()


def check_uri(uri: str) -> None:
    scheme = urlsplit(uri).scheme
    if scheme in ("", "file"):
        raise ValueError(
            f"track.uri={uri!r} is a file store, which MLflow 3 refuses; "
            "use sqlite:///<path>/mlflow.db or http(s)://host:port"
        )


# MLflow 3 opens an experiment in its GenAI view (traces, assistant) unless it is tagged as
# model training: with this tag `make ui` lands on the runs table.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# MLflow 3.17's UI takes its view (GenAI or model training) from this URL parameter, else
# from the browser's last choice, default GenAI: the experiment tag alone does not open the
# runs table (seen in a headless-Chromium screenshot). Links to the runs carry it.
RUNS_VIEW_QUERY = "workflowType=machine_learning"


def runs_page(base_url: str, experiment_id: str | None) -> str:
    """The MLflow UI page listing an experiment's runs (the UI's root without one)."""
    if experiment_id is None:
        return f"{base_url}/#/?{RUNS_VIEW_QUERY}"
    return f"{base_url}/#/experiments/{experiment_id}?{RUNS_VIEW_QUERY}"


def experiment_id_of(uri: str, experiment: str) -> str | None:
    """The experiment's id in the store at `uri`, or None (never creates anything)."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return None
    exp = MlflowClient(uri).get_experiment_by_name(experiment)
    return None if exp is None else exp.experiment_id


def ensure_store(uri: str, experiment: str) -> str:
    """Create the DB schema (first use runs MLflow's migrations) and the experiment.

    Idempotent, and under a file lock for SQLite (two first uses at once would race on
    MLflow's migration). Returns the experiment id.
    """
    key = (uri, experiment)
    if key in _ensured:
        return _ensured[key]
    check_uri(uri)
    from rank_sweep.locks import store_lock

    with store_lock(uri, f"MLflow store {uri}"):
        return _ensure_store(uri, experiment, key)


def _ensure_store(uri: str, experiment: str, key: tuple[str, str]) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = with_lock_retry(lambda: MlflowClient(tracking_uri=uri), "open MLflow store")
    db = sqlite_path(uri)
    if db is not None:
        with_lock_retry(lambda: client.search_experiments(max_results=1), "migrate MLflow store")
        enable_wal(db)
    exp = with_lock_retry(lambda: client.get_experiment_by_name(experiment), "get experiment")
    if exp is None:
        try:
            exp_id = with_lock_retry(
                lambda: client.create_experiment(
                    experiment, artifact_location=artifact_root_for(uri), tags=EXPERIMENT_TAGS
                ),
                "create experiment",
            )
            log.info("created MLflow experiment %r in %s", experiment, uri)
        except MlflowException:
            # Another process created it between our lookup and create.
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    elif exp.lifecycle_stage == "deleted":
        raise ValueError(
            f"track.experiment={experiment!r} is deleted in {uri}; restore it "
            "(mlflow experiments restore) or choose another track.experiment"
        )
    else:
        exp_id = exp.experiment_id
        for k, v in EXPERIMENT_TAGS.items():  # stores made before the tag existed
            if exp.tags.get(k) != v:
                with_lock_retry(lambda k=k, v=v: client.set_experiment_tag(exp_id, k, v), "tag")
    _ensured[key] = exp_id
    return exp_id
