"""Report on a real MLflow SQLite store written through MlflowClient per the tracking contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rank_sweep.job.identity import JobIdentity
from rank_sweep.report import build_report, check_protocols, load_runs, metric_history, random_init
from rank_sweep.report.__main__ import main as report_main
from rank_sweep.report.table import (
    PROJECT_TRAINED_BANNER,
    RANDOM_INIT_BANNER,
    compute_hours,
    display_table,
    pareto_mask,
    random_weight_metrics,
    report_banner,
)
from rank_sweep.track import contract as C

DATASETS = ("ucf101", "kinetics400")
TOTAL = 1_000_000  # full transformer parameters
EVAL_STEPS = (10, 20, 30)
PROTOCOL = {
    "detector_name": "i3d",
    "detector_sha256": "ab" * 32,
    "detector_pretrained": "false",
    "n_real": "16",
    "n_fake": "16",
    "frames": "16",
    "resolution": "64x64",
    "split": "test",
    "sample_steps": "4",
    "seed": "0",
    "kid_subset_size": "8",
}


def _fvd(rank: int | None, step: int, ds: str, seed: int = 0) -> float:
    # Falls with steps and with rank; full is best: a known, distinct value per run/step.
    base = 100.0 if rank is None else 100.0 + 400.0 / rank
    return base + 1000.0 / step + (5.0 if ds == "kinetics400" else 0.0) + 2.0 * seed


def _write_run(client, exp_id, tmp: Path, *, name, start, tags, params, metrics, files, status):
    run = client.create_run(exp_id, start_time=start, tags=tags, run_name=name)
    rid = run.info.run_id
    from mlflow.entities import Metric, Param

    client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()])
    ms = [Metric(k, float(v), start + s, s) for (k, s), v in metrics.items()]
    for i in range(0, len(ms), 900):
        client.log_batch(rid, metrics=ms[i : i + 900])
    for rel, size in files.items():
        local = tmp / rid / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"\0" * size)
        parent = str(Path(rel).parent)
        client.log_artifact(rid, str(local), None if parent == "." else parent)
    client.set_terminated(rid, status)
    return rid


def write_sweep(
    client,
    exp_id: str,
    tmp: Path,
    *,
    sweep_id: str,
    start: int,
    ranks=(4, 8, 16, 32, 64),
    full: bool = True,
    parent: bool = True,
    pruned: dict[int, int] | None = None,
    failed: tuple[int, ...] = (),
    no_ci: tuple[int, ...] = (),
    protocol_for=lambda rank, ds: {},
    seeds: tuple[int, ...] = (0,),
) -> dict[str, dict]:
    """One parent + one child per rank (+ full). Returns run_id -> what was logged."""
    pruned = pruned or {}
    parent_id = None
    if parent:
        parent_id = client.create_run(
            exp_id,
            start_time=start,
            run_name=f"sweep-{sweep_id}",
            tags={C.TAG_ROLE: "sweep", C.TAG_SWEEP_ID: sweep_id},
        ).info.run_id
    logged = {}
    settings = [(seed, r) for seed in seeds for r in [*ranks, *([None] if full else [])]]
    for i, (seed, rank) in enumerate(settings):
        method = "full" if rank is None else "lora"
        status = "failed" if rank in failed else "pruned" if rank in pruned else "completed"
        fp = f"fp{sweep_id}{i}"
        if rank is None:
            ident = JobIdentity("full", None, None, None, False, None, "full", fp)
        else:  # lora=ratio: peft receives alpha = 2r, scale 2
            ident = JobIdentity("lora", rank, 2.0 * rank, "ratio", False, 2.0, f"lora-r{rank}", fp)
        tags = {**ident.tags(), C.TAG_STATUS: status}
        if parent:
            tags |= {C.TAG_PARENT: parent_id, C.TAG_SWEEP_ID: sweep_id}
        if rank in pruned:
            tags[C.TAG_PRUNED_STEP] = str(pruned[rank])
        if rank in failed:
            tags[C.TAG_ERROR] = "RuntimeError: out of memory"
        params = {
            "finetune.method": method,
            "finetune.lr": 3e-5,
            "lora.rank": rank or 8,
            "lora.alpha": 2 * (rank or 8),
            "lora.alpha_mode": "ratio",
            "data.name": "ucf101",
            "train.seed": seed,
            "train.steps": 30,
            "dist.nproc_per_node": 2,
            "eval.num_real": 16,
            "eval.num_fake": 16,
            "eval.frames": 16,
            "device": "cpu",
        }
        for ds in DATASETS:
            for f, v in {**PROTOCOL, "dataset": ds, **protocol_for(rank, ds)}.items():
                params[f"protocol.{ds}.{f}"] = v
        steps = [s for s in EVAL_STEPS if s <= pruned.get(rank, 10**9)]
        if rank in failed:
            steps = []
        trainable = TOTAL if rank is None else 1000 * rank
        metrics = {(k, 0): v for k, v in {"model/trainable_params": trainable,
                                          "model/total_params": TOTAL}.items()}  # fmt: skip
        for s in range(1, (steps[-1] if steps else 5) + 1):
            metrics[("train/loss", s)] = 1.0 / s
        for ds in DATASETS:
            for s in steps:
                metrics[(f"fvd/{ds}", s)] = _fvd(rank, s, ds, seed)
                metrics[(f"val_fvd/{ds}", s)] = _fvd(rank, s, ds, seed)  # periodic tier curve
                metrics[(f"kid/{ds}", s)] = _fvd(rank, s, ds, seed) / 1000
            if steps and status == "completed" and rank not in no_ci:
                f = _fvd(rank, steps[-1], ds, seed)
                k = f / 1000
                s = steps[-1]
                metrics |= {(f"fvd_ci_lo/{ds}", s): f - 3, (f"fvd_ci_hi/{ds}", s): f + 4}
                metrics |= {(f"kid_ci_lo/{ds}", s): k * 0.9, (f"kid_ci_hi/{ds}", s): k * 1.1}
                metrics[(f"kid_std/{ds}", s)] = k * 0.05
        done = steps[-1] if steps else 3
        metrics |= {("perf/step_time_s", done): 0.5 + (rank or 100) / 100}
        metrics |= {("perf/peak_mem_mb", done): 500.0 + (rank or 1000)}
        metrics |= {("train/steps_done", done): float(done), ("data/skipped_clips", done): 0.0}
        files = {}  # only the weights: the size column reads them; other artifacts cost time
        if rank is None:
            files |= {"model/transformer/diffusion_pytorch_model.safetensors": 5000,
                      "model/transformer/config.json": 100}  # fmt: skip
        elif rank not in failed:
            files["adapter/pytorch_lora_weights.safetensors"] = 100 * rank
        rid = _write_run(
            client, exp_id, tmp, name=(f"{method}-r{rank}" if rank else "full") + (f"-s{seed}" if seed else ""), start=start + 1 + i,
            tags=tags, params=params, metrics=metrics, files=files,
            status="FAILED" if status == "failed" else "FINISHED",
        )  # fmt: skip
        weights = sum(v for k, v in files.items() if k.startswith(("adapter/", "model/")))
        logged[rid] = {"rank": rank, "status": status, "steps": steps, "weights": weights,
                       "trainable": trainable, "done": done}  # fmt: skip
    return logged


def planted_sweep(tmp_path_factory, name: str, ranks=(4, 8, 16, 32)):
    """A fresh SQLite store holding one written sweep (ranks + full), read back as the
    report reads it."""
    from mlflow.tracking import MlflowClient

    from rank_sweep.report import load_runs

    root = tmp_path_factory.mktemp(f"{name}_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(name, artifact_location=(root / "art").as_uri())
    write_sweep(client, exp, root, sweep_id=name[0], start=1_000, ranks=ranks)
    return load_runs(uri, name)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store (the schema migration is paid once), one experiment per scenario."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("report_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    art = root / "art"
    exps = {}
    for name in ("rank_sweep", "mixed", "borrow", "flat"):
        exps[name] = client.create_experiment(name, artifact_location=(art / name).as_uri())
    logged = {}
    # An older sweep first: the default must pick the newest parent, not this one.
    write_sweep(client, exps["rank_sweep"], root, sweep_id="old", start=1_000, ranks=(4,))
    logged["rank_sweep"] = write_sweep(
        client, exps["rank_sweep"], root, sweep_id="demo", start=2_000, pruned={32: 20}
    )

    def mixed_protocol(rank, ds):
        if rank == 8 and ds == "ucf101":
            return {"detector_sha256": "cd" * 32, "frames": "8"}
        if rank == 16:
            return {"detector_pretrained": "true"}
        return {}

    logged["mixed"] = write_sweep(
        client, exps["mixed"], root, sweep_id="mx", start=3_000, full=False,
        failed=(64,), no_ci=(4,), protocol_for=mixed_protocol,
    )  # fmt: skip
    logged["borrow"] = write_sweep(
        client, exps["borrow"], root, sweep_id="b1", start=4_000, full=False
    )
    write_sweep(client, exps["borrow"], root, sweep_id="solo", start=5_000, ranks=(), parent=False)
    logged["flat"] = write_sweep(
        client, exps["flat"], root, sweep_id="-", start=6_000, ranks=(4, 8), parent=False
    )
    return uri, client, logged


@pytest.fixture(scope="module")
def demo(store):
    uri, client, logged = store
    return load_runs(uri, "rank_sweep"), logged["rank_sweep"], client


@pytest.fixture(scope="module")
def demo_report(demo, tmp_path_factory):
    df, _, _ = demo
    return build_report(df, tmp_path_factory.mktemp("report"), title="demo report")


def test_default_sweep_is_newest_and_rows_match_mlflow(demo):
    df, logged, client = demo
    assert df.attrs["sweep_id"] == "demo"
    assert len(df) == 6 and set(df["run_id"]) == set(logged)
    assert df.iloc[0]["method"] == "full"
    assert list(df["rank"].iloc[1:]) == [4, 8, 16, 32, 64]
    for _, row in df.iterrows():
        run = client.get_run(row["run_id"])
        want = logged[row["run_id"]]
        for ds in DATASETS:
            for key in ("fvd", "kid", "fvd_ci_lo", "fvd_ci_hi", "kid_ci_lo", "kid_ci_hi"):
                col = f"{key}/{ds}"
                expect = run.data.metrics.get(col, math.nan)
                assert row[col] == pytest.approx(expect, nan_ok=True), col
            hist = [_fvd(want["rank"], s, ds) for s in want["steps"]]
            assert row[f"best_fvd/{ds}"] == pytest.approx(min(hist))
            assert [v for _, v in row["fvd_history"][ds]] == pytest.approx(hist)
        assert row["adapter_bytes"] == want["weights"] > 0
        assert row["trainable_params"] == want["trainable"]
        assert row["trainable_pct"] == pytest.approx(100 * want["trainable"] / TOTAL)
        assert row["steps_done"] == want["done"]
        assert row["status"] == want["status"]
        step_time = run.data.metrics["perf/step_time_s"]
        assert row["compute_hours"] == pytest.approx(step_time * want["done"] * 2 / 3600)
        assert row["compute_unit"] == "CPU"
        assert row["alpha"] == 2 * (want["rank"] or 8) if want["rank"] else np.isnan(row["alpha"])
    pruned = df[df["status"] == "pruned"].iloc[0]
    assert pruned["rank"] == 32 and pruned["pruned_step"] == 20
    full = df.iloc[0]
    r4 = df[df["rank"] == 4].iloc[0]
    assert r4["delta_fvd/ucf101"] == pytest.approx(r4["fvd/ucf101"] - full["fvd/ucf101"])
    assert full["delta_fvd/ucf101"] == 0


def test_metric_history_matches_logged_steps(demo, store):
    df, logged, _ = demo
    rid = df[df["rank"] == 32].iloc[0]["run_id"]
    h = metric_history(store[0], rid, "fvd/ucf101")
    assert list(h["step"]) == [10, 20]
    assert list(h["value"]) == pytest.approx([_fvd(32, 10, "ucf101"), _fvd(32, 20, "ucf101")])


def test_clean_sweep_has_no_warnings_but_random_init_banner(demo, demo_report):
    df, _, _ = demo
    assert check_protocols(df) == []
    assert demo_report.warnings == []
    html = demo_report.html.read_text()
    md = demo_report.markdown.read_text()
    assert RANDOM_INIT_BANNER in html and RANDOM_INIT_BANNER in md
    assert "pruned @ 20" in md
    assert "i3d" in md and "ab" * 32 in md  # the protocol stamp is printed


def test_html_is_self_contained_and_plots_are_pngs(demo_report):
    import matplotlib.image as mpimg

    html = demo_report.html.read_text()
    assert html.count('src="data:image/png;base64,') == 5
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert set(demo_report.plots) == {
        "fvd_vs_rank",
        "kid_vs_rank",
        "fvd_vs_params",
        "fvd_over_steps",
        "paired_fvd",
    }
    for png in demo_report.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_csv_rows_equal_table(demo, demo_report):
    df, _, _ = demo
    csv = pd.read_csv(demo_report.csv)
    assert len(csv) == 6 and list(csv["run_id"]) == list(df["run_id"])
    assert np.allclose(csv["fvd/ucf101"], df["fvd/ucf101"])
    assert "fvd_history" not in csv.columns


def test_mixed_protocol_missing_runs_and_no_baseline_are_stated(store, tmp_path):
    uri, _, _ = store
    df = load_runs(uri, "mixed")
    assert len(df) == 5
    proto = check_protocols(df)
    assert any("mixed protocol on ucf101: detector_sha256" in w for w in proto)
    assert any("mixed protocol on ucf101: frames" in w for w in proto)
    assert any("mixed protocol on kinetics400: detector_pretrained" in w for w in proto)
    assert not any("kinetics400: frames" in w for w in proto)
    paths = build_report(df, tmp_path)
    text = paths.markdown.read_text()
    for needle in (
        "no baseline",
        "missing run: lora r=64",
        "failed: RuntimeError: out of memory",
        "missing final metrics: lora r=4",
        "mixed protocol on ucf101: detector_sha256",
    ):
        assert needle in text, needle
        assert needle in paths.html.read_text().replace("&#x27;", "'"), needle
    assert df["delta_fvd/ucf101"].isna().all()
    assert RANDOM_INIT_BANNER in text  # some detectors are still random-init


def test_baseline_outside_the_sweep_is_borrowed_and_said(store):
    uri, _, _ = store
    df = load_runs(uri, "borrow")
    assert df.attrs["sweep_id"] == "b1" and len(df) == 6
    assert df.iloc[0]["method"] == "full" and not df.iloc[0]["in_sweep"]
    from rank_sweep.report import report_warnings

    assert any("baseline borrowed" in w for w in report_warnings(df))
    assert load_runs(uri, "borrow", borrow_baseline=False)["method"].eq("lora").all()


def test_no_parent_runs_reads_all_runs_without_parent(store):
    uri, _, logged = store
    df = load_runs(uri, "flat")
    assert df.attrs["sweep_id"] is None
    assert set(df["run_id"]) == set(logged["flat"]) and len(df) == 3


def test_cli_writes_into_out(store, tmp_path, capsys):
    uri, _, _ = store
    out = tmp_path / "cli"
    assert report_main(["--tracking-uri", uri, "--sweep", "old", "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "results.csv").is_file()
    assert len(pd.read_csv(out / "results.csv")) == 2
    assert "no baseline" not in capsys.readouterr().out


def test_clear_errors(store, tmp_path):
    uri, _, _ = store
    with pytest.raises(ValueError, match="sweep 'nope' not found; known sweeps: .*demo"):
        load_runs(uri, "rank_sweep", "nope")
    with pytest.raises(ValueError, match="experiment 'nope' not found.*available: .*flat"):
        load_runs(uri, "nope")
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        load_runs(f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()


def test_env_var_selects_store(store, monkeypatch):
    uri, _, _ = store
    monkeypatch.setenv("RANK_SWEEP_TRACKING_URI", uri)
    assert len(load_runs(experiment="flat")) == 3


def test_pareto_mask_and_hours():
    cost = np.array([1, 2, 3, 4, np.nan])
    loss = np.array([5, 3, 4, 1, 0])
    assert list(pareto_mask(cost, loss)) == [True, True, False, True, False]
    assert list(pareto_mask(np.array([1, 1]), np.array([2, 2]))) == [True, True]
    assert compute_hours(1.8, 1000, 4) == pytest.approx(2.0)


def test_protocol_check_reads_the_dotted_stamp_layout_too():
    """The evaluator stamps `detector.video.sha256`, `eval.n_real`, ...: same rules apply."""
    base = {"method": "lora", "rank": 4, "seed": 0, "run_name": "a", "run_id": "1" * 32}
    stamp = {
        "protocol.ucf101.detector.pretrained": "true",
        "protocol.ucf101.detector.video.sha256": "aa",
        "protocol.ucf101.detector.video.file": "/x/i3d.pt",
        "protocol.ucf101.eval.n_real": "2048",
        "protocol.ucf101.eval.seed": "0",
    }
    other = {
        **stamp,
        "protocol.ucf101.detector.video.file": "/y/i3d.pt",  # another machine: fine
        "protocol.ucf101.eval.seed": "1",  # follows train.seed: fine
        "protocol.ucf101.eval.n_real": "512",  # different clip count: must be stated
    }
    df = pd.DataFrame(
        [
            {**base, **stamp, "fvd/ucf101": 1.0},
            {**base, "run_name": "b", **other, "fvd/ucf101": 2.0},
        ]
    )
    warnings = check_protocols(df)
    assert len(warnings) == 1 and "ucf101: eval.n_real differs: 2048 (lora r=4 [a])" in warnings[0]
    assert not random_init(df)
    df.loc[1, "protocol.ucf101.detector.pretrained"] = "false"
    assert random_init(df)
    assert any("detector.pretrained differs" in w for w in check_protocols(df))
    # which metric rests on random weights: only a `random` detector counts, not a
    # project-trained one (also pretrained=false)
    assert report_banner(df) == RANDOM_INIT_BANNER and random_weight_metrics(df) == []
    df["protocol.ucf101.detector.video.weights"] = C.WEIGHTS_PROJECT
    df["protocol.ucf101.detector.frame.weights"] = [C.WEIGHTS_PUBLISHED, C.WEIGHTS_RANDOM]
    df["kid/ucf101"] = [0.1, 0.2]
    assert random_weight_metrics(df) == ["KID ucf101"]
    banner = report_banner(df)
    assert banner.startswith(RANDOM_INIT_BANNER) and "KID ucf101 from random" in banner
    # both unpublished detectors trained by the project (the embedded world): no "random"
    df["protocol.ucf101.detector.frame.weights"] = C.WEIGHTS_PROJECT
    assert random_weight_metrics(df) == []
    assert report_banner(df) == RANDOM_INIT_BANNER  # which detector is unpublished: unstamped
    for kind in ("video", "frame"):  # the evaluator's layout: pretrained beside weights
        df[f"protocol.ucf101.detector.{kind}.pretrained"] = "false"
        df[f"protocol.ucf101.periodic.detector.{kind}.pretrained"] = "false"  # a pruned run's
        df[f"protocol.ucf101.periodic.detector.{kind}.weights"] = C.WEIGHTS_PROJECT
    assert report_banner(df) == PROJECT_TRAINED_BANNER
    df["protocol.ucf101.detector.video.weights"] = [C.WEIGHTS_PROJECT, None]  # logged before
    assert report_banner(df) == RANDOM_INIT_BANNER  # the field: it may have been random
    df["protocol.ucf101.detector.video.weights"] = [C.WEIGHTS_PROJECT, C.WEIGHTS_RANDOM]
    assert report_banner(df) == f"{RANDOM_INIT_BANNER}; FVD ucf101 from random weights: pixel statistics, not quality"  # fmt: skip
    for c in [c for c in df if c.endswith("pretrained")]:
        df[c] = "true"
    assert report_banner(df) is None


def test_cli_bad_sweep_is_one_line_and_nonzero(store, capsys):
    assert report_main(["--tracking-uri", store[0], "--sweep", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep 'nope' not found") and err.count("\n") == 1


def _alpha_cells(df) -> list[tuple[str, str]]:
    """(method, alpha cell) per row of the human table."""
    headers, rows = display_table(df)
    col = headers.index("alpha (mode, scale)")
    return [(r["method"], row[col]) for (_, r), row in zip(df.iterrows(), rows)]


def test_alpha_column_is_what_peft_received_with_its_scale(store, compose, tmp_path):
    """`lora=ratio lora.rank=8` is reported as alpha 16 (2r, not the config's 16 by chance:
    r=64 gives 128) with scale 2; `lora.alpha_mode=fixed` keeps alpha and shows alpha/r."""
    from rank_sweep.track.tracker import flatten_config

    uri, client, _ = store
    exp = client.create_experiment("alpha", artifact_location=(tmp_path / "art").as_uri())
    jobs = [["lora=ratio", "lora.rank=8"], ["lora=ratio", "lora.rank=64"], ["lora.rank=64"]]
    for i, overrides in enumerate(jobs):
        cfg = compose(overrides)
        ident = JobIdentity.from_config(cfg)
        tags = {**ident.tags(), C.TAG_STATUS: C.COMPLETED}
        _write_run(
            client, exp, tmp_path, name=ident.label, start=10_000 + i, tags=tags,
            params=flatten_config(cfg), metrics={}, files={}, status="FINISHED",
        )  # fmt: skip
    df = load_runs(uri, "alpha")
    assert sorted(zip(df["alpha_mode"], df["rank"], df["alpha"], df["lora_scale"])) == [
        ("fixed", 64, 16.0, 0.25), ("ratio", 8, 16.0, 2.0), ("ratio", 64, 128.0, 2.0)
    ]  # fmt: skip
    cells = sorted(cell for _, cell in _alpha_cells(df))
    assert cells == ["128 (ratio, scale 2)", "16 (fixed, scale 0.25)", "16 (ratio, scale 2)"]
    assert ("full", "–") in _alpha_cells(load_runs(uri, sweep_id="demo"))
