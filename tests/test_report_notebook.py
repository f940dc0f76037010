"""The analysis notebook runs top to bottom, headless, on a store with two seeds."""

from __future__ import annotations

import sys

import pytest

from rank_sweep.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "rank_sweep_analysis.ipynb"


@pytest.mark.slow
def test_notebook_executes_against_a_populated_store(tmp_path, monkeypatch):
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from mlflow.tracking import MlflowClient
    from test_report_table import write_sweep

    # The kernelspec must launch this interpreter (argv "python" is mapped to sys.executable).
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("rank_sweep", artifact_location=(tmp_path / "art").as_uri())
    write_sweep(client, exp, tmp_path, sweep_id="nb", start=1_000, ranks=(4, 16), seeds=(0, 1),
                pruned={16: 20})  # fmt: skip
    monkeypatch.setenv("RANK_SWEEP_TRACKING_URI", uri)
    monkeypatch.setenv("RANK_SWEEP_SWEEP_ID", "nb")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client_nb = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client_nb.execute()

    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            texts.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
            images += "image/png" in out.get("data", {})
    text = "\n".join(texts)
    assert f"kernel python: {sys.executable}\n" in text  # the venv's interpreter, not another
    assert "sweep nb: 6 runs" in text
    assert "seeds: [0, 1]" in text
    assert images >= 6  # 4 report plots + one seed's plot + the loss curve
