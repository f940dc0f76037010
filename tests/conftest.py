"""Shared session fixtures: one tiny Wan model, one synthetic dataset per layout, an
isolated cache. Everything is real (files on disk, real loaders), just tiny.

Areas may add fixtures below the marker at the end; never rewrite this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep CPU tests reproducible and polite on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
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
def synth_ucf101(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rank_sweep.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("ucf101")
    write_synthetic("ucf101", root, _small_synth())
    return root


@pytest.fixture(scope="session")
def synth_kinetics400(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rank_sweep.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("k400")
    write_synthetic("kinetics400", root, _small_synth())
    return root


@pytest.fixture(scope="session")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rank_sweep.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("folder")
    write_synthetic("folder", root, _small_synth())
    return root


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Wan I2V pipeline written in diffusers layout (loaded via from_pretrained)."""
    from rank_sweep.model.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny_wan")
    make_tiny(out, seed=0)
    return out


@pytest.fixture
def compose():
    """Compose the real Hydra config with overrides: `compose(["lora.rank=4"])`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rank_sweep.config import register_configs
    from rank_sweep.paths import CONF_DIR, REPO_ROOT

    os.environ.setdefault("RANK_SWEEP_ROOT", str(REPO_ROOT))
    register_configs()

    def _compose(overrides: list[str] | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides or []))

    yield _compose
    GlobalHydra.instance().clear()


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
