"""The multirun callback: MLflow store + parent run + Optuna study before any job."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

from rank_sweep.paths import CONF_DIR, REPO_ROOT
from rank_sweep.sweep.callbacks import SweepCallback, read_sweep_info, sweep_id_for
from rank_sweep.track import contract as C
from rank_sweep.track.tracker import Tracker


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("sweep_stores")
    return {"uri": f"sqlite:///{d / 'mlflow.db'}", "storage": f"sqlite:///{d / 'optuna.db'}"}


def _multirun_config(
    sweep_dir: Path, stores: dict[str, str], sweep_args: list[str], extra: list[str] = ()
) -> DictConfig:
    """The config Hydra hands on_multirun_start: composed without the sweep overrides,
    which stay listed in hydra.overrides.task."""
    from rank_sweep.config import register_configs

    os.environ.setdefault("RANK_SWEEP_ROOT", str(REPO_ROOT))
    register_configs()
    plain = [
        "sweep_name=cbtest",
        f"track.uri={stores['uri']}",
        f"prune.storage={stores['storage']}",
        *extra,
    ]
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


def test_callback_creates_parent_study_and_reuses_them(tmp_path: Path, stores: dict) -> None:
    cfg = _multirun_config(tmp_path / "run1", stores, ["lora.rank=4,8"])
    cb = SweepCallback()
    cb.on_multirun_start(cfg)
    info = read_sweep_info(tmp_path / "run1")
    assert info is not None
    assert info.sweep_id == sweep_id_for(cfg) and info.sweep_id.startswith("cbtest-")
    assert info.study_name == info.sweep_id
    assert (info.tracking_uri, info.storage) == (stores["uri"], stores["storage"])
    client = MlflowClient(stores["uri"])
    parent = client.get_run(info.parent_run_id)
    assert parent.data.tags[C.TAG_ROLE] == "sweep"
    assert parent.data.tags[C.TAG_SWEEP_ID] == info.sweep_id
    assert "lora.rank=4,8" in parent.data.tags[C.TAG_OVERRIDES]
    assert parent.info.status == "RUNNING"
    study = optuna.load_study(study_name=info.study_name, storage=stores["storage"])
    assert study.direction == optuna.study.StudyDirection.MINIMIZE

    # Two jobs of this sweep report into it.
    for rank, status in ((4, "completed"), (8, "pruned")):
        tr = Tracker(info.tracking_uri, info.experiment)
        tr.start(
            run_name=f"lora-r{rank}",
            tags={C.TAG_SWEEP_ID: info.sweep_id, C.TAG_FINGERPRINT: f"f{rank}"},
            params={},
            parent_run_id=info.parent_run_id,
            system_metrics=False,
        )
        tr.finish(status)
    cb.on_multirun_end(cfg)
    ended = client.get_run(info.parent_run_id)
    assert ended.info.status == "FINISHED"
    assert ended.data.tags[C.status_count_tag(C.COMPLETED)] == "1"
    assert ended.data.tags[C.status_count_tag(C.PRUNED)] == "1"
    assert ended.data.tags[C.status_count_tag(C.FAILED)] == "0"

    # The same command again (new timestamped dir): same sweep id, same parent, same study.
    cfg2 = _multirun_config(tmp_path / "run2", stores, ["lora.rank=4,8"])
    SweepCallback().on_multirun_start(cfg2)
    info2 = read_sweep_info(tmp_path / "run2")
    assert (info2.sweep_id, info2.parent_run_id) == (info.sweep_id, info.parent_run_id)
    assert client.get_run(info.parent_run_id).info.status == "RUNNING"
    names = optuna.get_all_study_names(stores["storage"])
    assert names.count(info.sweep_id) == 1

    # Another sweep gets another id and parent.
    cfg3 = _multirun_config(tmp_path / "run3", stores, ["lora.rank=16,32"])
    SweepCallback().on_multirun_start(cfg3)
    info3 = read_sweep_info(tmp_path / "run3")
    assert info3.sweep_id != info.sweep_id and info3.parent_run_id != info.parent_run_id


def test_callback_without_tracking_still_creates_study(tmp_path: Path, stores: dict) -> None:
    cfg = _multirun_config(tmp_path, stores, ["lora.rank=2,4"], extra=["track=off", "prune=none"])
    SweepCallback().on_multirun_start(cfg)
    info = read_sweep_info(tmp_path)
    assert info.parent_run_id is None and info.tracking_uri is None
    study = optuna.load_study(study_name=info.study_name, storage=info.storage)
    assert study.trials == []
    SweepCallback().on_multirun_end(cfg)  # nothing to close; must not fail
    assert read_sweep_info(tmp_path / "nowhere") is None


_APP = """
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rank_sweep.config import register_configs
from rank_sweep.prune.study import make_pruner
from rank_sweep.prune.trial import JobTrial
from rank_sweep.sweep.callbacks import read_sweep_info
from rank_sweep.track.tracker import Tracker
from rank_sweep.track import contract as C

register_configs()


@hydra.main(config_path={conf!r}, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    info = read_sweep_info(Path(HydraConfig.get().sweep.dir))
    rank = int(cfg.lora.rank)
    tr = Tracker(info.tracking_uri, info.experiment)
    tr.start(run_name=f"lora-r{{rank}}", tags={{C.TAG_FINGERPRINT: f"r{{rank}}"}},
             params={{}}, parent_run_id=info.parent_run_id, system_metrics=False)
    trial = JobTrial.open(info.storage, info.study_name, make_pruner(cfg.prune),
                          params={{"method": "lora", "lora_rank": rank}},
                          fingerprint=f"r{{rank}}", prunable=True)
    value = float(rank)  # larger rank is worse here, so rank 8 is pruned at step 1
    tr.log_metrics({{"fvd/synthetic": value}}, step=1)
    if trial.report(value, 1):
        trial.prune()
        tr.finish("pruned", pruned_step=1)
        return value
    trial.complete(value)
    tr.finish("completed")
    return value


if __name__ == "__main__":
    main()
"""


def test_real_multirun_uses_callback(tmp_path: Path, stores: dict) -> None:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(_APP.format(conf=str(CONF_DIR))))
    uri, storage = stores["uri"], stores["storage"]  # migrated already: saves seconds
    cmd = [
        sys.executable,
        str(app),
        "-m",
        "lora.rank=4,8",
        "prune=asha",  # this app asks Optuna itself (the asynchronous path)
        "sweep_name=real",
        f"track.uri={uri}",
        f"prune.storage={storage}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = {**os.environ, "RANK_SWEEP_ROOT": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = read_sweep_info(tmp_path / "sweep")
    assert info is not None and info.sweep_id.startswith("real-")
    client = MlflowClient(uri)
    parent = client.get_run(info.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[C.status_count_tag(C.COMPLETED)] == "1"
    assert parent.data.tags[C.status_count_tag(C.PRUNED)] == "1"
    study = optuna.load_study(study_name=info.study_name, storage=storage)
    states = {t.params["lora_rank"]: t.state.name for t in study.trials}
    assert states == {4: "COMPLETE", 8: "PRUNED"}
