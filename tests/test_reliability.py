"""Reliability, the fast parts: locks, checkpoint fallback and trimming, trusted detector
files, one-line path checks, a sweep whose set-up fails, and results that do not depend
on the cache (the kill/concurrency soak is benchmarks/soak.py)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rank_sweep.locks import FileLock, Holder, LockHeld
from rank_sweep.paths import REPO_ROOT
from rank_sweep.track import contract as C
from rank_sweep.train import checkpoint as ck

# ---- locks ---------------------------------------------------------------------------------

_HOLD = """
import sys, time
from rank_sweep.locks import FileLock
FileLock(sys.argv[1], what="test holder", mode=sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder_process(path: Path, mode: str = "flock") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), mode], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("mode", ["flock", "exclusive"])
def test_lock_names_live_holder_and_takes_over_from_a_killed_one(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "x.lock"
    proc = _holder_process(path, mode)
    try:
        with pytest.raises(LockHeld) as info:
            FileLock(path, what="job x", mode=mode).acquire(timeout=0.3, poll=0.05)
        msg = str(info.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in msg and "\n" not in msg
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    caplog.set_level(logging.WARNING, logger="rank_sweep.locks")
    lock = FileLock(path, what="job x", mode=mode).acquire(timeout=5, poll=0.05)
    try:
        assert lock.took_over is not None and lock.took_over.pid == proc.pid
        assert "stale lock" in caplog.text
        assert lock.holder() == Holder(
            os.getpid(), socket.gethostname(), lock.holder().since, "job x"
        )
    finally:
        lock.release()
    again = FileLock(path, mode=mode).acquire(timeout=0)  # released: free at once
    again.release()


def test_nested_acquire_in_one_process_does_not_deadlock(tmp_path: Path) -> None:
    a = FileLock(tmp_path / "n.lock").acquire(timeout=0)
    b = FileLock(tmp_path / "n.lock").acquire(timeout=0)
    assert b is a
    b.release()
    assert a.held
    a.release()
    assert not a.held


def test_second_copy_of_a_job_exits_with_one_line_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rank_sweep.job.guard import LOCK_FILE, WAIT_ENV, JobLocked, hold_job_lock

    sdir = tmp_path / "lora-r8-abc"
    proc = _holder_process(sdir / LOCK_FILE)
    monkeypatch.setenv(WAIT_ENV, "0")
    try:
        with pytest.raises(JobLocked, match=rf"lora-r8-abc is already running: .*pid {proc.pid}"):
            hold_job_lock(sdir)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    lock = hold_job_lock(sdir)  # the dead holder's lock is taken over
    assert lock is not None and lock.took_over is not None
    lock.release()


# ---- checkpoints ---------------------------------------------------------------------------


def _write(sdir: Path, step: int) -> None:
    w = {"a": torch.full((4,), float(step))}
    state = {"optimizer": {"state": {}, "param_groups": []}, "progress": {"step": step}}
    ck.write_checkpoint(sdir, step, w, state)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_unreadable_newest_checkpoint_falls_back_to_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, 2)
    _write(tmp_path, 4)
    assert (tmp_path / ck.OLD).is_dir()  # the previous good one is kept
    _truncate(tmp_path / ck.CKPT / ck.STATE)
    assert not ck.intact(tmp_path / ck.CKPT) and ck.intact(tmp_path / ck.OLD)
    caplog.set_level(logging.WARNING)
    loaded = ck.load_latest(tmp_path)
    assert loaded is not None and loaded.state["step"] == 2 and loaded.path.name == ck.OLD
    assert "resuming from the previous checkpoint" in caplog.text
    # the next write drops the damaged one and keeps the good previous one
    _write(tmp_path, 3)
    assert ck.load_latest(tmp_path).state["step"] == 3
    assert ck.read_checkpoint(tmp_path / ck.OLD).state["step"] == 2
    # nothing readable: one error naming the dir to delete
    _truncate(tmp_path / ck.CKPT / ck.WEIGHTS)
    _truncate(tmp_path / ck.OLD / ck.STATE)
    with pytest.raises(ck.CheckpointError, match=rf"delete {tmp_path} to start this job over"):
        ck.load_latest(tmp_path)


@pytest.mark.parametrize("keep", [0, 1, 2])
def test_prune_finished_keeps_what_reuse_needs(tmp_path: Path, keep: int) -> None:
    _write(tmp_path, 2)
    _write(tmp_path, 4)
    freed = ck.prune_finished(tmp_path, keep)
    assert (tmp_path / ck.OLD).exists() is (keep == 2)
    state = ck.load_latest(tmp_path).state
    assert state["step"] == 4 and state["progress"] == {"step": 4}  # summary stays
    assert ("optimizer" in state) is (keep >= 1)
    assert torch.equal(load_file(str(tmp_path / ck.CKPT / ck.WEIGHTS))["a"], torch.full((4,), 4.0))
    assert (freed > 0) is (keep < 2)


# ---- detector files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted_i3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rank_sweep.eval.detectors.loaders import build_random, save_torchscript

    path = tmp_path_factory.mktemp("det") / "i3d_torchscript.pt"
    save_torchscript(build_random("i3d", 32, seed=3), path)
    return path


def test_unknown_torchscript_needs_trust(
    scripted_i3d: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rank_sweep.eval.detectors.loaders import load_video_detector
    from rank_sweep.eval.detectors.trust import UntrustedDetector

    with pytest.raises(UntrustedDetector, match="trust_torchscript=true") as info:
        load_video_detector(str(scripted_i3d), size=32)
    assert "\n" not in str(info.value)
    caplog.set_level(logging.WARNING)
    det = load_video_detector(str(scripted_i3d), size=32, trust_torchscript=True)
    assert det.feature_dim == 400 and det.published is None
    assert "can run arbitrary code" in caplog.text


def test_published_hash_is_recognised(scripted_i3d: Path, monkeypatch) -> None:
    from rank_sweep.eval.detectors import trust
    from rank_sweep.eval.detectors.loaders import load_video_detector

    assert trust.KNOWN_SHA256[
        "bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2"
    ] == ("i3d_torchscript.pt")
    digest = trust.file_sha256(scripted_i3d)  # stand-in for the 51 MB published file
    monkeypatch.setitem(trust.KNOWN_SHA256, digest, "i3d_torchscript.pt")
    det = load_video_detector(str(scripted_i3d), size=32)  # no trust flag needed
    assert det.published == "i3d_torchscript.pt" and det.sha256 == digest


def test_corrupt_cached_random_detector_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    from rank_sweep.eval.detectors.loaders import load_video_detector, random_detector_path

    monkeypatch.setenv("RANK_SWEEP_CACHE", str(tmp_path))
    first = load_video_detector(None, size=32)
    path = random_detector_path("i3d", 32)
    _truncate(path)
    again = load_video_detector(None, size=32)
    assert again.sha256 == first.sha256 and again.pretrained is False  # same seeded weights


# ---- preflight and sweep set-up ------------------------------------------------------------


def test_preflight_checks_paths_with_one_line(tmp_path: Path, scripted_i3d: Path) -> None:
    from rank_sweep.config.preflight import PreflightError, preflight

    cases = [
        (f"model.path={tmp_path / 'nope'}", "model.path="),
        (f"data=ucf101 data.root={tmp_path / 'nope'}", "no such directory"),
        (f"eval.i3d_path={tmp_path / 'none.pt'}", "no such file"),
        (f"eval.i3d_path={scripted_i3d}", "trust_torchscript=true"),
    ]
    for override, needle in cases:
        with pytest.raises(PreflightError) as info:
            preflight(override.split(), multirun=False)
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert preflight([f"eval.i3d_path={scripted_i3d}", "eval.trust_torchscript=true"], False) == 1


def test_sweep_whose_setup_fails_exits_nonzero_before_any_job(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "rank_sweep", "-m", "lora.rank=4,8",
        f"track.uri=sqlite:///{tmp_path}/mlflow.db", "prune.storage=bogus-storage",
        f"hydra.sweep.dir={tmp_path}/sweep", f"hydra.run.dir={tmp_path}/run",
    ]  # fmt: skip
    env = {**os.environ, "RANK_SWEEP_CACHE": str(tmp_path / "cache")}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "sweep set-up failed, no job was started" in errors[0], proc.stderr[
        -2000:
    ]
    assert "prune.storage='bogus-storage' not understood" in errors[0]
    out = proc.stdout + proc.stderr
    assert "plan:" not in out and "Launching" not in out  # no job was launched
    assert not (tmp_path / "sweep" / "sweep.json").exists()
    assert not (tmp_path / "cache" / "jobs").exists()
    assert time.time() - t0 < 300


# ---- results depend only on the config -----------------------------------------------------

TINY = [
    "train.steps=2", "train.checkpoint_every=1", "eval.every=2", "eval.metrics=[fvd]",
    "eval.num_real=3", "eval.num_fake=2", "eval.sample_steps=1", "eval.bootstrap=0",
    "eval.log_videos=0", "track.system_metrics=false", "track.log_artifacts=false",
    "data.synth.classes=2", "data.synth.videos_per_class=3",
]  # fmt: skip


def test_tiny_model_writing_leaves_the_global_rng_alone_and_is_rebuilt_if_corrupt(
    tmp_path: Path, monkeypatch
) -> None:
    from omegaconf import OmegaConf

    from rank_sweep.model.spec import resolve_model_path

    monkeypatch.setenv("RANK_SWEEP_CACHE", str(tmp_path))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    cfg = OmegaConf.create({"path": None, "tiny_seed": 0})
    path = resolve_model_path(cfg)  # writes it: cache empty
    assert torch.equal(torch.rand(3), expected)
    # a truncated cached weight file is rebuilt, not fatal
    from rank_sweep.integrity import safetensors_dir_whole

    weights = sorted(path.rglob("*.safetensors"))[0]
    good = weights.read_bytes()
    _truncate(weights)
    assert not safetensors_dir_whole(path)
    assert resolve_model_path(cfg) == path and weights.read_bytes() == good


def test_adapter_init_does_not_depend_on_the_global_rng(tiny_wan_dir: Path) -> None:
    from omegaconf import OmegaConf

    from rank_sweep.model.adapters import apply_finetune
    from rank_sweep.model.spec import WanSpec
    from rank_sweep.seeding import derive_seed, forked_rng

    lora = OmegaConf.create(
        {"rank": 4, "alpha": 8.0, "alpha_mode": "fixed", "alpha_ratio": 2.0, "dropout": 0.0,
         "target_modules": ["attn1.to_q", "attn1.to_v"]}
    )  # fmt: skip
    weights = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        spec = WanSpec(tiny_wan_dir, torch.device("cpu"), torch.float32, 3.0)
        model = spec.load_transformer()
        with forked_rng(derive_seed(0, "adapter-init")):  # what the runner does
            apply_finetune(model, "lora", lora)
        weights.append(
            {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        )
    assert weights[0].keys() == weights[1].keys() and weights[0]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow  # three tiny jobs end to end: ~1-3 min on 2 busy cores
def test_empty_and_warm_cache_give_bitwise_equal_adapters_and_history_is_relogged(
    tmp_path: Path, compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from rank_sweep.job.runner import run

    monkeypatch.setenv("RANK_SWEEP_CACHE", str(tmp_path / "cache"))  # empty: all written now

    def job(name: str, state: str, store: str):
        cfg = compose([*TINY, f"state_dir={tmp_path / state}", f"track.uri={store}"])
        return run(cfg, tmp_path / name)

    uri1, uri2 = f"sqlite:///{tmp_path}/m1.db", f"sqlite:///{tmp_path}/m2.db"
    first = job("empty", "s1", uri1)
    torch.manual_seed(12345)  # whatever the global RNG holds must not matter
    second = job("warm", "s2", f"sqlite:///{tmp_path}/m3.db")  # new state dir: trains again
    assert first.status == second.status == "completed"
    a = load_file(str(tmp_path / "empty" / "adapter" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "warm" / "adapter" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), "adapters depend on the cache state"

    # the finished job rerun against a store that lacks its history re-logs it
    again = job("relog", "s1", uri2)
    assert again.status == "completed"
    client = MlflowClient(uri2)
    exp = client.get_experiment_by_name("rank_sweep")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.data.tags[C.TAG_STATUS] == "completed"
    fvd = client.get_metric_history(r.info.run_id, "fvd/synthetic")
    assert [m.step for m in fvd] == [2] and fvd[0].value == first.objective
    (sdir,) = (tmp_path / "s1").iterdir()  # <state_dir>/<label>-<fingerprint>
    assert "optimizer" not in ck.load_latest(sdir).state  # trimmed after completion


# ---- sweeps kept apart, runs always closed -------------------------------------------------


@pytest.fixture(scope="module")
def shared_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow/Optuna store pair for this module: a fresh MLflow DB migrates for ~10 s."""
    return tmp_path_factory.mktemp("rel_stores")


def _sweep_config(sweep_dir: Path, d: Path, sweep_args: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from rank_sweep.config import register_configs
    from rank_sweep.paths import CONF_DIR

    os.environ.setdefault("RANK_SWEEP_ROOT", str(REPO_ROOT))
    register_configs()
    plain = ["sweep_name=rel", f"track.uri=sqlite:///{d}/m.db", f"prune.storage=sqlite:///{d}/o.db"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[*plain, f"hydra.sweep.dir={sweep_dir}"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.overrides.task = [*sweep_args, *plain]
    return cfg


def test_twin_sweep_gets_its_own_id_and_parent_waits_for_running_children(
    tmp_path: Path, shared_stores: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from rank_sweep.sweep.callbacks import SweepCallback, read_sweep_info, sweep_id_for
    from rank_sweep.sweep.guard import lock_root
    from rank_sweep.track.tracker import Tracker

    cfg = _sweep_config(tmp_path / "a", shared_stores, ["lora.rank=4,8"])
    base = sweep_id_for(cfg)
    holder = _holder_process(lock_root(cfg) / f"sweep-{base}.lock")  # a live twin sweep
    try:
        cb = SweepCallback()
        cb.on_multirun_start(cfg)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    info = read_sweep_info(tmp_path / "a")
    assert info.sweep_id == f"{base}.2" and info.study_name == f"{base}.2"
    # a child still running (another process's job) keeps the parent open at the sweep's end
    tr = Tracker(info.tracking_uri, info.experiment)
    tr.start(run_name="lora-r4", tags={C.TAG_SWEEP_ID: info.sweep_id}, params={},
             parent_run_id=info.parent_run_id, system_metrics=False)  # fmt: skip
    cb.on_multirun_end(cfg)
    client = MlflowClient(info.tracking_uri)
    assert client.get_run(info.parent_run_id).info.status == "RUNNING"
    tr.finish("completed")
    cb.on_multirun_end(cfg)  # its children done: now it closes
    assert client.get_run(info.parent_run_id).info.status == "FINISHED"


def test_run_is_marked_failed_when_opening_fails_after_it_exists(
    tmp_path: Path, compose, shared_stores: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from rank_sweep.job.identity import fingerprint, state_dir
    from rank_sweep.job.runner import run

    uri = f"sqlite:///{shared_stores}/m.db"
    cfg = compose([f"state_dir={tmp_path / 'state'}", f"track.uri={uri}",
                   "track.system_metrics=false"])  # fmt: skip
    (state_dir(cfg) / "run.json").mkdir(parents=True)  # the run id cannot be saved
    with pytest.raises(OSError):
        run(cfg, tmp_path / "out")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rank_sweep").experiment_id
    (r,) = client.search_runs([exp], f"tags.`rank_sweep.fingerprint` = '{fingerprint(cfg)}'")
    assert r.info.status == "FAILED" and r.data.tags[C.TAG_STATUS] == "failed"
