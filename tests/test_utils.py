"""Shared helpers: stores and locations, content keys, atomic publication, device choice."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rank_sweep import paths
from rank_sweep.utils.atomic import atomic_file, publish_dir, replace_dir, write_text_atomic
from rank_sweep.utils.device import pick_device
from rank_sweep.utils.keys import content_key


def test_tracking_uri_one_rule_for_every_reader(monkeypatch) -> None:
    monkeypatch.delenv(paths.ENV_TRACKING_URI, raising=False)
    assert paths.tracking_uri() == f"sqlite:///{paths.REPO_ROOT / 'mlflow.db'}"
    monkeypatch.setenv(paths.ENV_TRACKING_URI, "sqlite:////x/X.db")
    assert paths.tracking_uri() == "sqlite:////x/X.db"
    assert paths.tracking_uri("http://server:5000") == "http://server:5000"  # explicit wins
    assert paths.optuna_storage().endswith("/optuna.db")
    assert paths.optuna_storage("journal:///j.log") == "journal:///j.log"
    # `make ui` asks the same function through the CLI.
    env = {"PYTHONPATH": str(paths.REPO_ROOT), paths.ENV_TRACKING_URI: "sqlite:////x/X.db"}
    out = subprocess.run(
        [sys.executable, "-m", "rank_sweep.paths", "tracking-uri"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "sqlite:////x/X.db"


def test_locations_follow_the_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.ENV_CACHE, str(tmp_path))
    assert paths.latents_dir() == tmp_path / "latents"
    assert paths.state_root() == tmp_path / "jobs" and paths.state_root("/s") == Path("/s")
    assert paths.reports_dir() == paths.REPO_ROOT / "reports"


def test_content_key_is_the_canonical_json_digest() -> None:
    obj = {"b": [1, 2], "a": {"y": 1.5, "x": "s"}, "p": Path("/q")}
    blob = json.dumps(obj, sort_keys=True, default=str)
    assert content_key(obj, 16) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert content_key({"a": {"x": "s", "y": 1.5}, "b": [1, 2], "p": "/q"}, 16) == content_key(obj)
    assert len(content_key(obj, 8)) == 8 and content_key(obj, 8) != content_key({"b": [2, 1]}, 8)
    with pytest.raises(ValueError):
        content_key(obj, 0)


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == [
        "f.json"
    ]
    with atomic_file(target) as tmp:
        # same file system (rename is atomic), same name (torch archives embed it)
        assert tmp.parent.parent == target.parent and tmp.name == target.name
        tmp.write_text("new")
    assert target.read_text() == "new"


def _fill(tag: str):
    def build(d: Path) -> None:
        (d / "data").write_text(tag)
        (d / "DONE").write_text("")

    return build


def test_publish_dir_keeps_a_complete_dir_and_replaces_a_broken_one(tmp_path: Path) -> None:
    done = lambda p: (p / "DONE").exists()  # noqa: E731
    final = tmp_path / "cache" / "entry"
    assert publish_dir(final, _fill("first"), done) == final
    publish_dir(final, _fill("second"), done)  # complete: kept (a cache is written once)
    assert (final / "data").read_text() == "first"
    (final / "DONE").unlink()  # what a crash of a non-atomic writer leaves
    publish_dir(final, _fill("third"), done)
    assert (final / "data").read_text() == "third"

    def crash(d: Path) -> None:
        (d / "data").write_text("partial")
        raise OSError("disk full")

    other = tmp_path / "cache" / "other"
    with pytest.raises(OSError):
        publish_dir(other, crash, done)
    assert not other.exists() and sorted(p.name for p in other.parent.iterdir()) == ["entry"]


def test_publish_dir_loser_of_a_race_uses_the_winner(tmp_path: Path) -> None:
    final = tmp_path / "entry"

    def racing(d: Path) -> None:  # another process publishes while this one builds
        _fill("winner")(final.mkdir() or final)
        _fill("loser")(d)

    publish_dir(final, racing, lambda p: (p / "DONE").exists())
    assert (final / "data").read_text() == "winner" and len(list(tmp_path.iterdir())) == 1


def test_replace_dir_writes_anew(tmp_path: Path) -> None:
    final = tmp_path / "model"
    replace_dir(final, _fill("v1"))
    replace_dir(final, _fill("v2"))  # results: the newest write wins
    assert (final / "data").read_text() == "v2" and len(list(tmp_path.iterdir())) == 1


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    if torch.cuda.is_available():
        assert pick_device("auto", 0).type == "cuda"
    else:
        assert pick_device("auto", 3) == pick_device(None) == torch.device("cpu")
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")
