"""What a reader sees: `make ui`'s MLflow server started the way the Makefile starts it, and
a headless Chromium that screenshots a page at a given width (report.html, MLflow's landing
page). Used by the UI test and by `python -m rank_sweep.utils.browser` for the screenshots
a release note shows. Chromium + chromedriver come from `make browser-deps` (Debian)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)  # fmt: skip


def chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    a, b = shutil.which("chromium"), shutil.which("chromedriver")
    return (a, b) if a and b else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(uri: str, cwd: Path, timeout_s: float = 240.0) -> Iterator[str]:
    """`mlflow ui` on a free local port (the Makefile's flags); yields its base URL once
    /health answers, stops it afterwards."""
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        raise RuntimeError("the mlflow CLI is not installed beside this python")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s  # a loaded 2-core machine starts it slowly
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    err = proc.stderr.read()[-2000:] if proc.stderr else ""
                    raise RuntimeError(f"mlflow ui did not start: {err}") from None
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def headless(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium WebDriver with a window `width` px wide (own temp profile)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = chromium()
    if found is None:
        raise RuntimeError("Chromium + chromedriver not installed (make browser-deps)")
    with tempfile.TemporaryDirectory(prefix="chrome-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = found[0]
        for flag in (*CHROME_FLAGS, f"--window-size={width},{height}",
                     f"--user-data-dir={profile}"):  # fmt: skip
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(found[1]), options=opts)
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()


def wait_for_text(driver: Any, texts: list[str], timeout_s: float = 60.0) -> bool:
    """True once every text is in the rendered page (React pages render after load)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        page = driver.page_source
        if all(t in page for t in texts):
            return True
        time.sleep(0.5)
    return False


def screenshot(driver: Any, url: str, out: Path, wait_texts: list[str] = ()) -> bool:
    """Open `url`, wait for `wait_texts`, save a PNG of the window; True if all appeared."""
    driver.get(url)
    ok = wait_for_text(driver, list(wait_texts)) if wait_texts else True
    time.sleep(1.0)  # let the last layout pass settle before the capture
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    return ok


def experiment_url(base: str, experiment_id: str) -> str:
    """The page `make ui` points at: the experiment's runs table (model-training view)."""
    from rank_sweep.track.store import runs_page

    return runs_page(base, experiment_id)


def main(argv: list[str] | None = None) -> int:
    from mlflow.tracking import MlflowClient

    from rank_sweep.paths import tracking_uri
    from rank_sweep.track import contract as C

    p = argparse.ArgumentParser(
        prog="python -m rank_sweep.utils.browser",
        description="Screenshots of `make ui`'s landing page and of a report.html (1280 px).",
    )
    p.add_argument("--report", type=Path, default=None, help="a report.html to capture")
    p.add_argument("--out", type=Path, default=Path("reports/screenshots"))
    p.add_argument("--experiment", default="rank_sweep")
    p.add_argument("--width", type=int, default=1280)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uri = tracking_uri(None)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        sys.stderr.write(f"no experiment {args.experiment!r} in {uri}: run `make demo` first\n")
        return 1
    # the sweeps' parent runs: the rows a collapsed runs table shows
    parents = client.search_runs([exp.experiment_id], f"tags.`{C.TAG_ROLE}` = '{C.ROLE_SWEEP}'",
                                 max_results=3)  # fmt: skip
    names = [r.info.run_name for r in parents]
    with headless(args.width) as driver:
        if args.report is not None:
            shot = args.out / "report.png"
            screenshot(driver, args.report.resolve().as_uri(), shot)
            log.info("report.html at %d px: %s", args.width, shot)
        with mlflow_ui(uri, Path.cwd()) as base:
            shot = args.out / "mlflow_landing.png"
            ok = screenshot(driver, experiment_url(base, exp.experiment_id), shot, names)
            log.info("MLflow landing page (%s): %s; runs shown: %s", uri, shot, ok)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
