"""MLflow tracker against a real SQLite store (one store per module: migration costs seconds)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from rank_sweep.track import contract as C
from rank_sweep.track.retry import is_lock_error, with_lock_retry
from rank_sweep.track.runs import child_runs, status_counts
from rank_sweep.track.store import artifact_root_for, check_uri, ensure_store, sqlite_path
from rank_sweep.track.tracker import Tracker, find_run_by_fingerprint, flatten_config

EXP = "rank_sweep_test"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{db}"
    ensure_store(uri, EXP)
    return uri


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    hist = MlflowClient(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in hist)


def _child(uri: str, fp: str, parent: str | None = None, **kw) -> Tracker:
    tr = Tracker(uri, EXP)
    tags = {
        C.TAG_METHOD: "lora",
        C.TAG_LORA_RANK: "8",
        C.TAG_SWEEP_ID: "s-1",
        C.TAG_FINGERPRINT: fp,
    }
    tr.start(run_name="lora-r8", tags=tags, params={"lora.rank": "8"}, parent_run_id=parent, **kw)
    return tr


def test_flatten_config_dot_keys_lists_and_truncation() -> None:
    cfg = OmegaConf.create({"a": {"b": 1, "c": [0.9, 0.999]}, "n": None, "e": {}, "s": "x" * 7000})
    flat = flatten_config(cfg)
    assert flat["a.b"] == "1"
    assert flat["a.c"] == "[0.9,0.999]"
    assert flat["n"] == "None"
    assert flat["e"] == "{}"
    assert len(flat["s"]) == 6000 and flat["s"].endswith("...")
    assert flatten_config({"x": {"y": True}}) == {"x.y": "True"}


def test_store_paths_and_refused_file_store(store: str) -> None:
    db = sqlite_path(store)
    assert db is not None and db.exists()
    root = artifact_root_for(store)
    assert root == (db.parent / "mlartifacts").as_uri()
    assert artifact_root_for("http://127.0.0.1:5000") is None
    assert MlflowClient(store).get_experiment_by_name(EXP).artifact_location == root
    assert ensure_store(store, EXP) == ensure_store(store, EXP)
    with pytest.raises(ValueError, match="file store"):
        check_uri("file:///tmp/mlruns")
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_parent_child_tags_metrics_and_status(store: str, tmp_path: Path) -> None:
    parent = Tracker(store, EXP)
    pid = parent.start(
        run_name="sweep",
        tags={C.TAG_ROLE: "sweep", C.TAG_SWEEP_ID: "s-1"},
        params={},
        system_metrics=False,
    )
    child = _child(store, "fp-tags", parent=pid, system_metrics=False)
    child.log_metrics({"train/loss": 1.0, "fvd/synthetic": 50.0}, step=1)
    child.log_metrics({"train/loss": 0.5}, step=2)
    child.log_metrics({"fvd/synthetic": 40.0}, step=2)
    art = tmp_path / "summary.json"
    art.write_text("{}")
    child.log_artifact(art)
    child.log_dict({"a": 1}, "config/resolved.json")
    child.finish("pruned", pruned_step=2)

    client = MlflowClient(store)
    run = client.get_run(child.run_id)
    assert run.data.tags[C.TAG_PARENT] == pid
    assert run.data.tags[C.TAG_STATUS] == "pruned"
    assert run.data.tags[C.TAG_PRUNED_STEP] == "2"
    assert run.data.tags[C.TAG_METHOD] == "lora"
    assert run.data.params["lora.rank"] == "8"
    assert run.info.status == "FINISHED"  # pruned by design, not a crash; the tag says pruned
    assert _history(store, child.run_id, "fvd/synthetic") == [(1, 50.0), (2, 40.0)]
    assert _history(store, child.run_id, "train/loss") == [(1, 1.0), (2, 0.5)]
    names = {f.path for f in client.list_artifacts(child.run_id)}
    assert {"summary.json", "config"} <= names
    prun = client.get_run(pid)
    assert prun.data.tags[C.TAG_ROLE] == "sweep"
    assert C.TAG_STATUS not in prun.data.tags  # only jobs carry a status
    kids = child_runs(store, EXP, pid)
    assert [k.run_id for k in kids] == [child.run_id]
    assert status_counts(kids)["pruned"] == 1

    failed = _child(store, "fp-fail", system_metrics=False)
    failed.finish("failed", error="RuntimeError: boom\n" + "x" * 5000)
    frun = client.get_run(failed.run_id)
    assert frun.info.status == "FAILED"
    assert frun.data.tags[C.TAG_ERROR].startswith("RuntimeError: boom")
    assert len(frun.data.tags[C.TAG_ERROR]) <= 1000
    with pytest.raises(ValueError, match="status='done'"):
        failed.finish("done")


def test_resume_continues_same_run_without_duplicate_steps(store: str) -> None:
    first = _child(store, "fp-resume", system_metrics=False)
    for step in (1, 2, 3):
        first.log_metrics({"train/loss": float(step)}, step=step)
    # Killed here: no finish(). The rerun replays steps 2..5 from its last checkpoint.
    assert find_run_by_fingerprint(store, EXP, "fp-resume", ("running",)).run_id == first.run_id
    assert find_run_by_fingerprint(store, EXP, "fp-resume", ("completed", "pruned")) is None

    second = Tracker(store, EXP)
    rid = second.start(
        run_name="lora-r8",
        tags={C.TAG_FINGERPRINT: "fp-resume"},
        params={"lora.rank": "8", "output_dir": "/elsewhere"},
        resume_run_id=first.run_id,
        system_metrics=False,
    )
    assert rid == first.run_id
    for step in (2, 3, 4, 5):
        second.log_metrics({"train/loss": 10.0 * step}, step=step)
    second.finish("completed")
    assert _history(store, rid, "train/loss") == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
        (5, 50.0),
    ]
    run = MlflowClient(store).get_run(rid)
    assert run.info.status == "FINISHED"
    assert run.data.tags[C.TAG_RESUMES] == "1"
    assert run.data.params["output_dir"] == "/elsewhere"
    found = find_run_by_fingerprint(store, EXP, "fp-resume", ("completed", "pruned"))
    assert found is not None and found.run_id == rid and found.status == "completed"
    assert found.metrics["train/loss"] == 50.0
    assert find_run_by_fingerprint(store, EXP, "fp-none", ("completed",)) is None
    with pytest.raises(ValueError, match="statuses"):
        find_run_by_fingerprint(store, EXP, "fp-resume", ("done",))


def test_system_metrics_bound_to_run(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    tr = _child(store, "fp-sys", system_metrics=True)
    time.sleep(1.0)
    tr.finish("completed")
    keys = MlflowClient(store).get_run(tr.run_id).data.metrics
    assert any(k.startswith("system/cpu") for k in keys), sorted(keys)


def _hold_exclusive_lock(db: Path, seconds: float, locked: threading.Event) -> None:
    con = sqlite3.connect(db, timeout=10, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    locked.set()
    time.sleep(seconds)
    con.execute("COMMIT")
    con.close()


def test_lock_error_is_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # MLflow waits 20 s (busy_timeout) before it reports a lock; the retry is the net
    # behind that. A short sqlite timeout produces the same real error quickly.
    db = tmp_path / "lock.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    locked = threading.Event()
    th = threading.Thread(target=_hold_exclusive_lock, args=(db, 0.6, locked))
    th.start()
    locked.wait(5)

    def write() -> None:
        with sqlite3.connect(db, timeout=0.02) as con:
            con.execute("INSERT INTO t VALUES (1)")

    with caplog.at_level(logging.WARNING, logger="rank_sweep.track.retry"):
        with_lock_retry(write, "test write")
    th.join()
    assert any("database is locked" in r.getMessage() for r in caplog.records)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


def test_lock_error_detected_through_mlflow_wrapping(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    db = tmp_path / "lock.db"
    sqlite3.connect(db).close()
    locked = threading.Event()
    th = threading.Thread(target=_hold_exclusive_lock, args=(db, 0.3, locked))
    th.start()
    locked.wait(5)
    with pytest.raises(sqlite3.OperationalError) as real:
        sqlite3.connect(db, timeout=0.01).execute("CREATE TABLE u (x INTEGER)")
    th.join()
    try:  # MLflow re-raises SQLAlchemy errors as MlflowException(message=e) from e
        raise MlflowException(message=real.value) from real.value
    except MlflowException as wrapped:
        assert is_lock_error(wrapped)
    assert not is_lock_error(ValueError("no such table"))
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("no such table")

    with pytest.raises(ValueError):
        with_lock_retry(broken, "broken")
    assert calls == [1]  # other errors are never retried


def _parallel_worker(uri: str, fp: str, steps: int) -> str:
    tr = Tracker(uri, EXP)
    tr.start(
        run_name=fp,
        tags={C.TAG_FINGERPRINT: fp},
        params={f"p{i}": str(i) for i in range(30)},
        system_metrics=False,
    )
    for step in range(1, steps + 1):
        tr.log_metrics({"train/loss": 1.0 / step, "train/lr": 1e-4, "perf/step_time_s": 0.1}, step)
    tr.finish("completed")
    return tr.run_id


def test_two_processes_write_one_store(store: str) -> None:
    steps = 60
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        ids = pool.starmap(
            _parallel_worker, [(store, "fp-par-a", steps), (store, "fp-par-b", steps)]
        )
    assert len(set(ids)) == 2
    for rid in ids:
        for key in ("train/loss", "train/lr", "perf/step_time_s"):
            assert [s for s, _ in _history(store, rid, key)] == list(range(1, steps + 1))
        assert MlflowClient(store).get_run(rid).data.tags[C.TAG_STATUS] == "completed"


def test_resume_of_unknown_run_opens_new_one(store: str) -> None:
    tr = Tracker(store, EXP)
    rid = tr.start(
        run_name="x",
        tags={C.TAG_FINGERPRINT: "fp-unknown"},
        params={},
        resume_run_id="0" * 32,
        system_metrics=False,
    )
    assert rid != "0" * 32
    assert MlflowClient(store).get_run(rid).data.tags[C.TAG_STATUS] == "running"
    tr.finish("completed")


def test_experiment_opens_on_the_runs_table(tmp_path):
    """MLflow 3 shows an experiment in its GenAI view unless it is tagged as model training."""
    from rank_sweep.track.store import ensure_store

    uri = f"sqlite:///{tmp_path / 'kind.db'}"
    exp_id = ensure_store(uri, "kind_test")
    exp = MlflowClient(uri).get_experiment(exp_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


def test_reuse_only_of_full_budget_runs_or_this_sweeps_pruned(store: str, tmp_path: Path) -> None:
    from rank_sweep.track.runs import copy_run, find_reusable_run

    def finished(fp: str, status: str, sweep: str) -> str:
        tr = Tracker(store, EXP)
        tr.start(run_name=fp, tags={C.TAG_FINGERPRINT: fp, C.TAG_SWEEP_ID: sweep}, params={},
                 system_metrics=False)  # fmt: skip
        tr.log_metrics({"fvd/synthetic": 5.0}, 1)
        tr.finish(status, pruned_step=1 if status == C.PRUNED else None)
        return tr.run_id

    pruned = finished("fp-reuse", C.PRUNED, "sweep-a")
    assert find_reusable_run(store, EXP, "fp-reuse", "sweep-b") is None  # another sweep's decision
    assert find_reusable_run(store, EXP, "fp-reuse", None) is None  # a single run
    assert find_reusable_run(store, EXP, "fp-reuse", "sweep-a").run_id == pruned  # its own rerun
    done = finished("fp-reuse", C.COMPLETED, "sweep-a")
    assert find_reusable_run(store, EXP, "fp-reuse", "sweep-b").run_id == done
    assert find_reusable_run(store, EXP, "fp-missing", "sweep-a") is None
    parent = Tracker(store, EXP)
    parent.start(run_name="p", tags={C.TAG_ROLE: C.ROLE_SWEEP}, params={}, system_metrics=False)
    copy = copy_run(store, done, parent.run_id, {C.TAG_SWEEP_ID: "sweep-c"})
    copy_of_copy = copy_run(store, copy, parent.run_id, {C.TAG_SWEEP_ID: "sweep-d"})
    tags = MlflowClient(store).get_run(copy_of_copy).data.tags
    assert tags[C.TAG_REUSED_FROM] == done  # points at the run that did the work
    assert tags[C.TAG_STATUS] == C.COMPLETED and tags[C.TAG_PARENT] == parent.run_id
