"""Shared session fixtures: one tiny Wan model, one synthetic dataset per layout, an
isolated cache. Everything is real (files on disk, real loaders), just tiny.

Areas may add fixtures below the marker at the end; never rewrite this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep CPU tests reproducible and polite on a 2-core machine: under `make test` every core
# runs a pytest worker (xdist), so each worker's torch takes one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets its own cache dir, never the developer's `.cache`."""
    d = tmp_path_factory.mktemp("cache")
    os.environ["RANK_SWEEP_CACHE"] = str(d)
    return d


def _small_synth():
    from rank_sweep.config.schema import SynthConfig

    return SynthConfig(classes=3, videos_per_class=4, frames=20, height=48, width=64, fps=8, seed=0)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory):
    """`synth_dir(layout)`: a small synthetic dataset in that layout, written once per session."""
    from rank_sweep.data.synth import write_synthetic

    written: dict[str, Path] = {}

    def get(layout: str) -> Path:
        if layout not in written:
            root = tmp_path_factory.mktemp(layout)
            write_synthetic(layout, root, _small_synth())
            written[layout] = root
        return written[layout]

    return get


@pytest.fixture(scope="session", params=["ucf101", "kinetics400", "folder"])
def synth(request: pytest.FixtureRequest, synth_dir) -> tuple[str, Path]:
    """(layout, root) for each layout in turn: a test taking it runs once per layout."""
    return request.param, synth_dir(request.param)


@pytest.fixture(scope="session")
def synth_ucf101(synth_dir) -> Path:
    return synth_dir("ucf101")


@pytest.fixture(scope="session")
def synth_kinetics400(synth_dir) -> Path:
    return synth_dir("kinetics400")


@pytest.fixture(scope="session")
def synth_folder(synth_dir) -> Path:
    return synth_dir("folder")


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Wan I2V pipeline written in diffusers layout (loaded via from_pretrained)."""
    from rank_sweep.model.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny_wan")
    make_tiny(out, seed=0)
    return out


@pytest.fixture(scope="session")
def make_spec(tiny_wan_dir: Path):
    """`make_spec(path=tiny_wan_dir, cls=WanSpec, **model_keys)`: a spec built the way jobs
    build it, from a `model` config (the schema's ModelConfig), on CPU."""
    import torch

    from rank_sweep.config.schema import ModelConfig
    from rank_sweep.model.spec import WanSpec

    def build(path: Path | None = tiny_wan_dir, cls: type = WanSpec, **keys):
        cfg = ModelConfig(path=None if path is None else str(path), **keys)
        return cls.from_config(cfg, torch.device("cpu"))

    return build


@pytest.fixture
def compose():
    """Compose the real Hydra config with overrides, as preflight and the CLI do:
    `compose(["lora.rank=4"])`."""
    from rank_sweep.config.preflight import compose_job

    def _compose(overrides: list[str] | None = None):
        return compose_job(list(overrides or []))

    return _compose


# Overrides that keep a composed job tiny and its stores in the test's temp dir.
TEST_OVERRIDES = ["train.steps=4", "eval.every=2", "track.system_metrics=false"]


@pytest.fixture(scope="package")
def cfg_global():
    """The default config composed once per test package (composition costs seconds),
    like lightning-hydra-template's cfg_train_global; take `cfg` for a private copy."""
    from rank_sweep.config.preflight import compose_job

    return compose_job(TEST_OVERRIDES)


@pytest.fixture
def cfg(cfg_global, tmp_path: Path):
    """A private copy of `cfg_global` whose outputs, job state and stores are in tmp_path."""
    from omegaconf import open_dict

    c = cfg_global.copy()
    with open_dict(c):
        c.output_dir = str(tmp_path / "out")
        c.state_dir = str(tmp_path / "jobs")
        c.track.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        c.prune.storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    return c


# ---- area fixtures below (append only) ----


@pytest.fixture(scope="session")
def synth_ucf101_corrupt(synth_ucf101: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """(data) A copy of synth_ucf101 with a zero-byte, a truncated and a text-as-.avi file,
    plus one listed-but-absent file, all added to trainlist01. Returns root + the bad paths."""
    import shutil

    root = tmp_path_factory.mktemp("ucf101_corrupt") / "UCF-101"
    shutil.copytree(synth_ucf101, root)
    good = sorted(root.glob("*/*.avi"))[0]
    cls = good.parent.name
    bad = {
        "zero": root / cls / f"v_{cls}_g23_c01.avi",
        "truncated": root / cls / f"v_{cls}_g23_c02.avi",
        "text": root / cls / f"v_{cls}_g23_c03.avi",
    }
    bad["zero"].write_bytes(b"")
    data = good.read_bytes()
    bad["truncated"].write_bytes(data[: int(len(data) * 0.9)])
    bad["text"].write_text("this is a text file, not a video\n")
    label = next(
        ln.split()[0]
        for ln in (root / "ucfTrainTestlist" / "classInd.txt").read_text().splitlines()
        if ln.split()[1] == cls
    )
    absent = root / cls / f"v_{cls}_g24_c09.avi"
    with open(root / "ucfTrainTestlist" / "trainlist01.txt", "a") as f:
        for p in [*bad.values(), absent]:
            f.write(f"{cls}/{p.name} {label}\n")
    return {"root": root, "bad": bad, "absent": absent}


@pytest.fixture(scope="session")
def tiny_wan22_a14b_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """(model/Wan2.2) The tiny two-expert Wan2.2 I2V-A14B pipeline in diffusers layout."""
    from rank_sweep.model.tiny22 import make_tiny_arch

    return make_tiny_arch("wan2.2_i2v_a14b", tmp_path_factory.mktemp("tiny_a14b"), seed=0)


@pytest.fixture(scope="session")
def tiny_wan22_ti2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """(model/Wan2.2) The tiny Wan2.2 TI2V-5B pipeline (48-ch VAE, expand_timesteps)."""
    from rank_sweep.model.tiny22 import make_tiny_arch

    return make_tiny_arch("wan2.2_ti2v_5b", tmp_path_factory.mktemp("tiny_ti2v"), seed=0)


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """(study) An empty, fully migrated MLflow SQLite store, created once: creating one
    costs ~15 s of migrations on 2 cores; tests copy it with `fresh_mlflow_uri`."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def fresh_mlflow_uri(mlflow_db_template: Path, tmp_path: Path) -> str:
    """(study) sqlite URI of a private copy of the migrated empty store."""
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_db_template, db)
    return f"sqlite:///{db}"


@pytest.fixture(scope="session", autouse=True)
def smoke_world_env() -> str:
    """(world) Composed configs name the seconds-long `smoke` world, not the demo one
    (conf/model/tiny_wan.yaml reads RANK_SWEEP_WORLD): tests never build the demo world."""
    os.environ["RANK_SWEEP_WORLD"] = "smoke"
    return "smoke"


@pytest.fixture(scope="session")
def smoke_world(isolated_cache: Path, smoke_world_env: str):
    """(world) The smoke world, built once per session into the isolated cache."""
    from rank_sweep.world import ensure_world

    return ensure_world("smoke", 0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """(train) Tiny matmuls on a shared 2-core box are far faster (and as deterministic) on
    one thread; a module opts in with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def isolated_tracking_store(isolated_cache: Path) -> str:
    """(clean clone) A test that leaves the MLflow store to its default would otherwise
    create `<repo>/mlflow.db`: the session's default store lives in its temp dir instead.
    Tests of the default itself unset the variable with monkeypatch."""
    from rank_sweep.paths import ENV_TRACKING_URI

    uri = f"sqlite:///{isolated_cache.parent / 'default-mlflow.db'}"
    os.environ[ENV_TRACKING_URI] = uri
    return uri
