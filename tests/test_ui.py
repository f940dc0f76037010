"""`make ui`'s MLflow server, started the way the Makefile starts it, lists the sweep's child
runs over its REST API and serves its landing page (the experiment opens on the runs table:
with MLflow 3.17 that takes the `workflowType` URL parameter `make ui` prints: the tag alone
left the page on the GenAI view, seen in a screenshot); Chromium renders that page."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from rank_sweep.track import contract as C
from rank_sweep.track.store import EXPERIMENT_TAGS, ensure_store
from rank_sweep.track.tracker import Tracker

EXP = "rank_sweep"


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def sweep_store(tmp_path: Path) -> tuple[str, str, list[str]]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_store(uri, EXP)
    parent = Tracker(uri, EXP)
    pid = parent.start(run_name="sweep-x", tags={C.TAG_ROLE: "sweep"}, params={},
                       system_metrics=False)  # fmt: skip
    kids = []
    for rank in (4, 8):
        child = Tracker(uri, EXP)
        kids.append(child.start(run_name=f"lora-r{rank}", tags={C.TAG_METHOD: "lora"},
                                params={"lora.rank": str(rank)}, parent_run_id=pid,
                                system_metrics=False))  # fmt: skip
        child.log_metrics({"fvd/synthetic": 10.0 + rank}, 1)
        child.finish("completed" if rank == 4 else "pruned", pruned_step=None if rank == 4 else 1)
    parent.finish("completed")
    return uri, pid, kids


def test_mlflow_ui_lists_child_runs_over_rest(sweep_store, tmp_path: Path) -> None:
    from rank_sweep.utils.browser import chromium, experiment_url, headless, mlflow_ui, screenshot

    uri, pid, kids = sweep_store
    with mlflow_ui(uri, tmp_path) as base:
        exp = json.loads(
            urllib.request.urlopen(
                f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXP}", timeout=10
            ).read()
        )["experiment"]
        tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
        assert tags.items() >= EXPERIMENT_TAGS.items()  # opens on runs, not the GenAI view
        found = _post(
            f"{base}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [exp["experiment_id"]],
             "filter": f"tags.mlflow.parentRunId = '{pid}'", "max_results": 100},
        )  # fmt: skip
        ids = sorted(r["info"]["run_id"] for r in found.get("runs", []))
        assert ids == sorted(kids)
        statuses = {r["info"]["status"] for r in found["runs"]}
        assert statuses == {"FINISHED"}  # the pruned one reads as finished, not KILLED
        with urllib.request.urlopen(f"{base}/", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read(2000).lower()
        if chromium() is None:
            pytest.skip("Chromium + chromedriver not installed: no landing-page screenshot")
        pytest.importorskip("selenium")
        shot = tmp_path / "landing.png"
        with headless(1280) as driver:  # the page a user lands on, rendered
            assert screenshot(driver, experiment_url(base, exp["experiment_id"]), shot,
                              ["sweep-x"]), driver.page_source[-3000:]  # fmt: skip
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_ui_prints_the_runs_table_url(sweep_store, monkeypatch) -> None:
    """`make ui` prints the page to open: the experiment's runs in MLflow's training view."""
    from mlflow.tracking import MlflowClient

    from rank_sweep.paths import UI_URL, ui_runs_url

    uri = sweep_store[0]
    monkeypatch.setenv("RANK_SWEEP_TRACKING_URI", uri)
    exp_id = MlflowClient(uri).get_experiment_by_name(EXP).experiment_id
    assert ui_runs_url(EXP) == f"{UI_URL}/#/experiments/{exp_id}?workflowType=machine_learning"
    assert ui_runs_url("no_such_experiment") == f"{UI_URL}/#/?workflowType=machine_learning"
