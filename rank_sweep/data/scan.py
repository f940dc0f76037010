"""Probe video files once: results cached in SQLite keyed by (path, size, mtime).

A 13k-video UCF-101 takes minutes to demux end to end; after the first scan every
dataset construction is a few indexed lookups. A changed file (size or mtime) is probed
again; PROBE_VERSION retires old results when the probe logic changes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Union

import av
from tqdm import tqdm

from rank_sweep.data.video import VideoInfo, probe
from rank_sweep.paths import cache_dir

log = logging.getLogger(__name__)

PROBE_VERSION = 1
ProbeResult = Union[VideoInfo, str]  # info, or the reason the file is unusable


def _key(path: Path) -> str:
    st = path.stat()
    return f"{PROBE_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _db() -> sqlite3.Connection:
    db = cache_dir() / "data" / "probe-cache.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(db), timeout=60)
    conn.execute("CREATE TABLE IF NOT EXISTS probe (key TEXT PRIMARY KEY, info TEXT, reason TEXT)")
    return conn


def probe_one(path: Path) -> ProbeResult:
    try:
        return probe(path)
    except (ValueError, OSError, EOFError, RuntimeError, av.error.FFmpegError) as exc:
        # Recorded as the file's reason and counted by the dataset: a bad video is data.
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def scan(paths: list[Path], desc: str = "probe videos") -> dict[Path, ProbeResult]:
    """Probe info (or a reason string) for every path, using and filling the cache."""
    keys: dict[Path, str] = {}
    out: dict[Path, ProbeResult] = {}
    for p in paths:
        try:
            keys[p] = _key(p)
        except OSError as exc:
            out[p] = f"cannot stat: {exc.strerror}"
    with closing(_db()) as conn:
        cached: dict[str, tuple] = {}
        klist = list(keys.values())
        for i in range(0, len(klist), 500):
            chunk = klist[i : i + 500]
            q = f"SELECT key, info, reason FROM probe WHERE key IN ({','.join('?' * len(chunk))})"
            cached.update({k: (info, reason) for k, info, reason in conn.execute(q, chunk)})
        todo = [p for p, k in keys.items() if k not in cached]
        for p, k in keys.items():
            if k in cached:
                info, reason = cached[k]
                out[p] = VideoInfo(**json.loads(info)) if info else reason
        if todo:
            workers = max(1, min(4, os.cpu_count() or 1, len(todo)))
            with ThreadPoolExecutor(workers) as pool:
                results = list(
                    tqdm(pool.map(probe_one, todo), total=len(todo), desc=desc, leave=False)
                )
            rows = []
            for p, r in zip(todo, results):
                out[p] = r
                info = json.dumps(r.to_dict()) if isinstance(r, VideoInfo) else None
                rows.append((keys[p], info, None if info else r))
            with conn:
                conn.executemany("INSERT OR REPLACE INTO probe VALUES (?, ?, ?)", rows)
            log.info("probed %d videos (%d from cache)", len(todo), len(keys) - len(todo))
    return out
