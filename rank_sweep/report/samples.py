"""The report's sample strips: the newest first/middle/last-frame strip of each run, fetched
from the run's `samples/` artifacts, with the MLflow path of its side-by-side video."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rank_sweep.report.table import arm_name

log = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
STRIP_SUFFIX = "_strip.png"
SIDE_BY_SIDE_SUFFIX = "_side_by_side.mp4"


@dataclass
class SampleStrip:
    label: str  # the run's setting, as the report names it (table.arm_name)
    png: Path  # copied beside the report
    video_artifact: str | None  # `samples/stepNNNNNN_side_by_side.mp4` in the run
    run_id: str  # the run holding the video (a reused copy: its source)


def collect_strips(df: pd.DataFrame, out_dir: Path) -> list[SampleStrip]:
    """Download each run's newest strip into `out_dir/samples/`; runs without one are skipped."""
    uri = df.attrs.get("tracking_uri")
    if not uri or "run_id" not in df:
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    out = []
    dest = Path(out_dir) / SAMPLES_DIR
    for _, r in df.iterrows():
        owner = r.get("reused_from") or r["run_id"]  # a reused copy: the source's artifacts
        try:
            names = sorted(a.path for a in client.list_artifacts(owner, SAMPLES_DIR))
        except Exception as exc:  # noqa: BLE001 - a run without artifacts still reports
            log.debug("no samples for run %s: %s", r["run_id"], exc)
            continue
        strips = [n for n in names if n.endswith(STRIP_SUFFIX)]
        if not strips:
            continue
        newest = strips[-1]  # step-numbered names sort by step
        local = Path(client.download_artifacts(owner, newest))
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{r['run_id'][:8]}_{local.name}"
        shutil.copyfile(local, target)
        video = newest.replace(STRIP_SUFFIX, SIDE_BY_SIDE_SUFFIX)
        out.append(SampleStrip(arm_name(r), target, video if video in names else None, owner))
    return out
