"""Sample videos of a sweep's runs, as pairs of the same clip (same first frame) by two runs.

The runner logs `samples/step{step:06d}_clip{i}.mp4` at each eval; clip i of every run is
generated from the same first frame, prompt and noise. For each run the newest step of each
clip is used (the final eval for completed runs). Files are fetched once from MLflow and
re-encoded to WebM/VP9 (every browser plays it; the file name and container metadata of
the original are dropped, so nothing on the page names the run).
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from rank_sweep.paths import cache_dir

log = logging.getLogger(__name__)

SAMPLE_RE = re.compile(r"step(\d+)_clip(\d+)\.(mp4|webm|avi|mkv|mov)$")


@dataclass(frozen=True)
class Sample:
    run_id: str
    clip: str  # clip index within the eval set: the pairing key
    step: int
    path: Path  # local, browser-playable file


@dataclass(frozen=True)
class Pair:
    run_a: str
    run_b: str
    clip: str

    def key(self) -> tuple[str, str, str]:
        return (*sorted((self.run_a, self.run_b)), self.clip)  # type: ignore[return-value]


def newest_per_clip(files: list[tuple[str, str]]) -> dict[str, tuple[int, str]]:
    """[(run-relative artifact path, ...)] -> clip -> (step, path) of the newest step."""
    best: dict[str, tuple[int, str]] = {}
    for path, _ in files:
        m = SAMPLE_RE.search(path)
        if not m:
            continue
        step, clip = int(m.group(1)), m.group(2)
        if clip not in best or step > best[clip][0]:
            best[clip] = (step, path)
    return best


def pairs_of(samples: list[Sample]) -> list[Pair]:
    """Every unordered pair of runs that both have a sample of the same clip."""
    by_clip: dict[str, list[str]] = {}
    for s in samples:
        by_clip.setdefault(s.clip, []).append(s.run_id)
    out = []
    for clip, runs in sorted(by_clip.items()):
        for a, b in itertools.combinations(sorted(set(runs)), 2):
            out.append(Pair(a, b, clip))
    return out


def to_webm(src: Path, dst: Path) -> Path:
    """Decode with PyAV (the project's reader) and write VP9 WebM at the source fps."""
    import av
    import numpy as np

    from rank_sweep.data.video import write_video

    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 8)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])
    return write_video(dst, frames, fps=fps)


def sweep_samples(
    tracking_uri: str | None, experiment: str, sweep_id: str | None
) -> tuple[str | None, list[Sample]]:
    """(sweep id, local WebM samples) of the sweep's job runs, downloaded from MLflow."""
    from rank_sweep.report.load import _client, _experiment_id, select_runs

    client, uri = _client(tracking_uri)
    exp_id = _experiment_id(client, experiment, uri)
    sweep, runs = select_runs(client, exp_id, sweep_id)
    root = cache_dir() / "study" / (sweep or "unparented")
    samples: list[Sample] = []
    for run in runs:
        rid = run.info.run_id
        listed = [(a.path, "") for a in client.list_artifacts(rid, "samples") if not a.is_dir]
        for clip, (step, art) in sorted(newest_per_clip(listed).items()):
            dst = root / rid / f"clip{clip}_step{step}.webm"
            if not dst.is_file():
                got = Path(client.download_artifacts(rid, art, str(root / rid / "src")))
                to_webm(got, dst)
            samples.append(Sample(rid, clip, step, dst))
    log.info("%d samples of %d runs in sweep %s (%s)", len(samples), len(runs), sweep, uri)
    return sweep, samples
