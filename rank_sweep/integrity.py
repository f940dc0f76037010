"""Cheap checks that a written file is whole, without reading it all.

A process killed mid-write (or a full disk) leaves truncated files; these checks catch
that from sizes and headers, so caches can rebuild and checkpoints can fall back instead
of failing on every rerun.
"""

from __future__ import annotations

import json
from pathlib import Path


def safetensors_whole(path: Path) -> bool:
    """The file is exactly as long as its header says (a truncated write fails this)."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return False
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        return Path(path).stat().st_size == 8 + n + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def safetensors_dir_whole(root: Path) -> bool:
    """Every *.safetensors under `root` is whole."""
    return all(safetensors_whole(f) for f in Path(root).rglob("*.safetensors"))
