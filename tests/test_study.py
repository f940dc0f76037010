"""Blind A/B study: pairs, vote store, win rates / Bradley-Terry, and a real headless
Chromium casting 10 votes through the page (skipped, with the reason, without Chromium)."""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rank_sweep.report.votes import Outcome, bradley_terry, outcomes, wilson, win_table
from rank_sweep.study.samples import Sample, newest_per_clip, pairs_of
from rank_sweep.study.store import Vote, VoteStore
from rank_sweep.track import contract as C

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def test_pairs_and_newest_sample():
    files = [("samples/step000004_clip0.mp4", ""), ("samples/step000012_clip0.mp4", ""),
             ("samples/step000012_clip1.mp4", ""), ("samples/notes.txt", "")]  # fmt: skip
    assert newest_per_clip(files) == {
        "0": (12, "samples/step000012_clip0.mp4"),
        "1": (12, "samples/step000012_clip1.mp4"),
    }
    s = [Sample(r, c, 1, Path("x")) for r in ("a", "b", "c") for c in ("0",)]
    s.append(Sample("a", "1", 1, Path("x")))  # clip 1 only from one run: no pair
    assert [(p.run_a, p.run_b, p.clip) for p in pairs_of(s)] == [
        ("a", "b", "0"), ("a", "c", "0"), ("b", "c", "0")]  # fmt: skip


def test_store_roundtrip_and_validation(tmp_path):
    store = VoteStore(tmp_path / "v.db")
    store.add(Vote("S", "r1", "a", "b", "0", "left"))
    store.add(Vote("S", "r2", "b", "a", "0", "same"))
    store.add(Vote("T", "r1", "a", "b", "0", "right"))
    got = store.votes("S")
    assert [(v.rater, v.choice, v.winner) for v in got] == [
        ("r1", "left", "a"),
        ("r2", "same", None),
    ]
    assert all(re.match(r"\d{4}-\d\d-\d\dT", v.created_at) for v in got)
    with pytest.raises(ValueError):
        store.add(Vote("S", "r1", "a", "b", "0", "better"))
    with pytest.raises(ValueError):
        store.add(Vote("S", " ", "a", "b", "0", "left"))


def test_win_rates_and_bradley_terry():
    assert wilson(0, 0) != wilson(0, 0)  # nan for no comparisons
    lo, hi = wilson(7, 10)
    assert 0.39 < lo < 0.40 and 0.89 < hi < 0.90  # Wilson 95% for 7/10
    # a > b > c, consistently
    outs = [Outcome("a", "b", 1.0)] * 6 + [Outcome("b", "a", 1.0)] * 2
    outs += [Outcome("b", "c", 1.0)] * 6 + [Outcome("c", "b", 1.0)] * 2
    outs += [Outcome("a", "c", 1.0)] * 7 + [Outcome("a", "c", 0.5)]
    p = bradley_terry(outs)
    assert p["a"] > p["b"] > p["c"]
    assert np.isclose(np.exp(np.mean(np.log(list(p.values())))), 1.0)
    # MM fixed point: expected wins equal observed (with the 0.5 prior each way)
    exp_ab = 8 * p["a"] / (p["a"] + p["b"])
    votes = [Vote("S", "r", "a", "b", "0", "left")] * 3 + [Vote("S", "r", "b", "a", "0", "same")]
    t = win_table(votes)
    row = t.set_index("run_id").loc["a"]
    assert (row.wins, row.ties, row.losses, row.comparisons) == (3, 1, 0, 4)
    assert row.win_rate == pytest.approx(3.5 / 4) and row.bt_rank == 1
    assert outcomes(votes)[3] == Outcome("b", "a", 0.5)
    assert 0 < exp_ab < 8


def _make_sweep(uri: str, tmp_path: Path, n_runs: int = 3) -> tuple[str, str, list[str]]:
    """A real MLflow store holding one sweep: a parent and n LoRA runs with sample videos."""
    from mlflow.tracking import MlflowClient

    from rank_sweep.data.video import write_video

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("rank_sweep", artifact_location=str(tmp_path / "art"))
    sweep = "sweep-ab"
    parent = client.create_run(exp, tags={C.TAG_ROLE: "sweep",
                                          C.TAG_SWEEP_ID: sweep}).info.run_id  # fmt: skip
    ids = []
    for k, rank in enumerate((4, 8, 16)[:n_runs]):
        run = client.create_run(exp, run_name=f"r{rank}", tags={
            C.TAG_SWEEP_ID: sweep, "mlflow.parentRunId": parent,
            C.TAG_METHOD: "lora", C.TAG_LORA_RANK: str(rank),
            C.TAG_STATUS: "completed"})  # fmt: skip
        rid = run.info.run_id
        client.log_param(rid, "finetune.method", "lora")
        client.log_param(rid, "lora.rank", str(rank))
        for clip, step in ((0, 6), (0, 12), (1, 12)):  # the older clip-0 sample is not shown
            frames = np.full((9, 32, 32, 3), 40 * k + 60 * clip + step, np.uint8)
            for t in range(9):  # a moving bar, so the video is not a still
                frames[t, :, 2 * t : 2 * t + 4] = 250
            write_video(tmp_path / "src" / rid / f"step{step:06d}_clip{clip}.mp4", frames, fps=8)
        client.log_artifacts(rid, str(tmp_path / "src" / rid), "samples")
        client.set_terminated(rid)
        ids.append(rid)
    return uri, sweep, ids


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium + chromedriver not installed (apt-get install -y chromium chromium-driver)",
)
def test_browser_votes_reach_store_and_report(tmp_path, monkeypatch, fresh_mlflow_uri):
    pytest.importorskip("selenium", reason="selenium not installed (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from rank_sweep.report import build_report, load_runs
    from rank_sweep.study.samples import sweep_samples
    from rank_sweep.study.server import Study, make_server

    uri, sweep, ids = _make_sweep(fresh_mlflow_uri, tmp_path)
    got_sweep, samples = sweep_samples(uri, "rank_sweep", None)  # newest sweep by default
    assert got_sweep == sweep and len(samples) == 6 and {s.step for s in samples} == {12}
    db = tmp_path / "votes.db"
    study = Study(sweep, samples, VoteStore(db))
    server = make_server(study, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    choices = ["left", "right", "same", "left", "left", "right", "left", "same", "right", "left"]
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"http://127.0.0.1:{port}/?rater=rater-1")
        page = driver.page_source
        assert all(r not in page for r in ids) and "r16" not in page  # names hidden
        t0 = time.perf_counter()
        driver.find_element(By.ID, "start").click()
        wait = WebDriverWait(driver, 30)
        for i, choice in enumerate(choices):
            # buttons unlock only after both videos really played (timeupdate past 0)
            wait.until(lambda d: d.execute_script("return document.body.dataset.ready || ''"))
            # (currentTime itself may be 0 again at a loop point: ask what has played)
            state = driver.execute_script(
                "return ['left','right'].map(s => { const v = document.getElementById(s);"
                " return [v.played.length ? v.played.end(0) : 0, v.error === null,"
                " v.videoWidth, v.src]; })"
            )
            for played, ok, width, src in state:
                assert played > 0 and ok and width == 32, state
                assert re.search(r"/video/[\w-]+/(left|right)$", src), src  # opaque URL
            driver.find_element(By.ID, f"vote-{choice}").click()
            wait.until(lambda d, n=i + 1: d.execute_script("return document.body.dataset.voted")
                       == str(n))  # fmt: skip
        vote_s = time.perf_counter() - t0
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()

    with sqlite3.connect(db) as con:  # the raw rows, not through the store class
        rows = con.execute("SELECT rater, left_run, right_run, choice, created_at, sweep_id "
                           "FROM votes ORDER BY id").fetchall()  # fmt: skip
    assert [r[3] for r in rows] == choices
    assert all(r[0] == "rater-1" and r[5] == sweep and r[1] != r[2] for r in rows)
    assert all({r[1], r[2]} <= set(ids) for r in rows)
    expected = {rid: [0, 0, 0] for rid in ids}  # wins, ties, losses from the raw rows
    for _, left, right, choice, _, _ in rows:
        if choice == "same":
            expected[left][1] += 1
            expected[right][1] += 1
        else:
            win, lose = (left, right) if choice == "left" else (right, left)
            expected[win][0] += 1
            expected[lose][2] += 1

    monkeypatch.setenv("RANK_SWEEP_VOTES_DB", str(db))  # the report's default vote store
    df = load_runs(uri, "rank_sweep", sweep)
    paths = build_report(df, tmp_path / "report")
    md = paths.markdown.read_text()
    section = md.split("## Blind A/B study: win rates", 1)[1].split("\n## ", 1)[0]
    table = [ln for ln in section.splitlines() if ln.startswith("| ") and "BT rank" not in ln]
    names = {rid: df.set_index("run_id").loc[rid, "run_name"] for rid in ids}
    seen = set()
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rid = next(r for r in ids if f"[{names[r]}]" in cells[1])
        w, t, lo = (int(c) for c in cells[3:6])
        n = sum(expected[rid])
        assert (int(cells[2]), w, t, lo) == (n, *expected[rid])
        # the report prints 3 decimals: compare the printed text (a half-way rate such as
        # 0.4375 -> "0.438" sits exactly on an abs=5e-4 tolerance and fails it by 1 ulp)
        assert cells[6].split()[0] == f"{(w + t / 2) / n:.3f}"
        seen.add(rid)
    assert seen == {rid for rid in ids if sum(expected[rid])}
    assert "Blind A/B study" in paths.html.read_text()
    assert vote_s < 120, f"10 votes took {vote_s:.0f} s"
