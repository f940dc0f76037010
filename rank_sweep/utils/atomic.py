"""Atomic publication of files and directories: readers see the old thing or the whole
new thing, never half of it, and parallel writers of the same content never clash.

Everything is written under a private temp name in the destination's own directory (same
filesystem, so the final rename is atomic) and renamed into place; the temp is removed on
any failure.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def _tmp_name(final: Path) -> Path:
    # pid + random part: two processes (or threads) never share a temp name.
    return final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; on a clean exit it replaces `path`.

    with atomic_file(out / "x.safetensors") as tmp:
        save_file(tensors, str(tmp))

    The temp file keeps the final file name inside a private temp dir: torch's zip
    archives (torch.save, torch.jit.save) record the file stem inside the archive, so a
    random temp name would make the same weights hash differently.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = _tmp_name(path)
    tmp_dir.mkdir()
    tmp = tmp_dir / path.name
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def publish_dir(
    final: Path, build: Callable[[Path], object], complete: Callable[[Path], bool]
) -> Path:
    """Make the directory `final` once: `build(tmp)` fills a private temp dir that is then
    renamed to `final`. Cache semantics: a `final` that is already `complete` is kept (also
    when another process wins the race while we build); an incomplete one, left by a crash
    of older code, is replaced."""
    final = Path(final)
    if final.is_dir() and complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp)
        if final.exists() and not complete(final):
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)  # fails onto a non-empty dir: another process won
        except OSError:
            if not complete(final):
                raise
            log.info("another process wrote %s first; using it", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def replace_dir(final: Path, build: Callable[[Path], object]) -> Path:
    """Write the directory `final` anew: `build(tmp)` fills a temp dir beside it, which then
    takes the place of any older `final` (results, not caches: the newest write wins)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
