"""Every path a job reads or writes, checked before any work, each problem one line.

A wrong `model.path` used to surface as a 20-line traceback after the job had opened
its run; here it is `error: model.path=...: ...` before Hydra starts anything.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from rank_sweep.config.validate import ConfigError


def _writable(path: Path) -> bool:
    """The dir exists and is writable, or the nearest existing parent is (mkdir works)."""
    p = path
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


@lru_cache(maxsize=16)
def _detector_verdict(path: str, mtime: float, trust: bool, what: str) -> None:
    from rank_sweep.eval.detectors.loaders import _is_torchscript, trusted_root
    from rank_sweep.eval.detectors.trust import UntrustedDetector, judge

    file = Path(path)
    try:
        judge(file, _is_torchscript(file), trust, trusted_root(), what)
    except UntrustedDetector as exc:
        key = "eval.i3d_path" if what == "I3D" else "eval.inception_path"
        raise ConfigError(f"{key}={path}: {exc}") from None


def check_paths(cfg: Any) -> None:
    """Raise ConfigError (one line) for the first unusable path of a composed config."""
    from rank_sweep.model.layout import missing_parts

    if cfg.model.path is not None:
        path = Path(str(cfg.model.path)).expanduser()
        missing = missing_parts(path)
        if missing:
            raise ConfigError(
                f"model.path={cfg.model.path}: not a complete diffusers "
                f"WanImageToVideoPipeline dir; missing {', '.join(missing[:4])}"
            )
    if cfg.data.root is not None:
        root = Path(str(cfg.data.root)).expanduser()
        if not root.is_dir():
            raise ConfigError(f"data.root={cfg.data.root}: no such directory")
        if not os.access(root, os.R_OK | os.X_OK):
            raise ConfigError(f"data.root={cfg.data.root}: not readable")
    trust = bool(cfg.eval.get("trust_torchscript", False))
    for key, what in (("i3d_path", "I3D"), ("inception_path", "Inception")):
        value = cfg.eval.get(key)
        if value is None or value == "world":  # the embedded world's detector, built on use
            continue
        file = Path(str(value)).expanduser()
        if not file.is_file():
            raise ConfigError(f"eval.{key}={value}: no such file")
        _detector_verdict(str(file), file.stat().st_mtime, trust, what)
    for key in ("state_dir", "output_dir"):
        value = cfg.get(key)
        if value is not None and not _writable(Path(str(value)).expanduser()):
            raise ConfigError(f"{key}={value}: not writable")
