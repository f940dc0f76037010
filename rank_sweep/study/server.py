"""The blind A/B page: stdlib http.server on 127.0.0.1.

GET  /                         the page (no run names anywhere in it)
GET  /api/next?rater=R         a new trial: {trial, left, right, votes}; sides randomised
GET  /video/<trial>/<left|right>  the WebM of that side of that trial (opaque URL)
POST /api/vote                 {trial, rater, choice: left|right|same} -> stored vote

Trials live in memory: the page only ever holds an opaque trial id, and the server maps it
to (run, run, clip, side order). Pairs are dealt least-rated-first for each rater (ties
broken at random) so a short session still covers every pair.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from rank_sweep.study.page import PAGE
from rank_sweep.study.samples import Pair, Sample, pairs_of
from rank_sweep.study.store import CHOICES, Vote, VoteStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    left: Sample
    right: Sample


class Study:
    """Pairs, trials and votes of one sweep (the server's state, testable without HTTP)."""

    def __init__(self, sweep_id: str, samples: list[Sample], store: VoteStore) -> None:
        self.sweep_id, self.store = sweep_id, store
        self.samples = {(s.run_id, s.clip): s for s in samples}
        self.pairs = pairs_of(samples)
        if not self.pairs:
            raise ValueError(
                f"sweep {sweep_id}: no clip has samples from two runs (need eval.log_videos >= 1 "
                "and at least two finished runs)"
            )
        self.trials: dict[str, Trial] = {}
        self._rng = secrets.SystemRandom()
        self._lock = threading.Lock()

    def next_trial(self, rater: str) -> tuple[str, Trial]:
        seen = Counter(
            Pair(v.left_run, v.right_run, v.clip).key()
            for v in self.store.votes(self.sweep_id)
            if v.rater == rater
        )
        fewest = min(seen.get(p.key(), 0) for p in self.pairs)
        pair = self._rng.choice([p for p in self.pairs if seen.get(p.key(), 0) == fewest])
        a, b = self.samples[(pair.run_a, pair.clip)], self.samples[(pair.run_b, pair.clip)]
        if self._rng.random() < 0.5:
            a, b = b, a
        trial_id = secrets.token_urlsafe(12)
        with self._lock:
            self.trials[trial_id] = Trial(a, b)
        return trial_id, Trial(a, b)

    def vote(self, trial_id: str, rater: str, choice: str) -> int:
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)}")
        with self._lock:
            trial = self.trials.pop(trial_id, None)  # one vote per trial
        if trial is None:
            raise KeyError("unknown or already voted trial")
        return self.store.add(
            Vote(self.sweep_id, rater, trial.left.run_id, trial.right.run_id, trial.left.clip,
                 choice)
        )  # fmt: skip


def _handler(study: Study) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rank_sweep-study"

        def log_message(self, fmt: str, *args) -> None:  # route access logs to logging
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, obj: dict) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            parts = [p for p in url.path.split("/") if p]
            if not parts:
                return self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
            if parts == ["api", "next"]:
                rater = (parse_qs(url.query).get("rater") or [""])[0].strip()
                if not rater:
                    return self._json(400, {"error": "rater id required"})
                tid, _ = study.next_trial(rater)
                n = sum(1 for v in study.store.votes(study.sweep_id) if v.rater == rater)
                return self._json(200, {"trial": tid, "left": f"/video/{tid}/left",
                                        "right": f"/video/{tid}/right", "votes": n,
                                        "pairs": len(study.pairs)})  # fmt: skip
            if len(parts) == 3 and parts[0] == "video" and parts[2] in ("left", "right"):
                trial = study.trials.get(parts[1])
                if trial is None:
                    return self._json(404, {"error": "unknown trial"})
                sample = trial.left if parts[2] == "left" else trial.right
                return self._send(200, sample.path.read_bytes(), "video/webm")
            return self._json(404, {"error": "not found"})

        do_HEAD = do_GET

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/api/vote":
                return self._json(404, {"error": "not found"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                vid = study.vote(str(body["trial"]), str(body["rater"]), str(body["choice"]))
            except KeyError as exc:
                return self._json(409, {"error": str(exc).strip("'")})
            except (ValueError, TypeError) as exc:
                return self._json(400, {"error": str(exc)})
            return self._json(int(HTTPStatus.CREATED), {"vote": vid})

    return Handler


def make_server(study: Study, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A bound server (port 0 picks a free one); call serve_forever() or run it in a thread."""
    server = ThreadingHTTPServer((host, port), _handler(study))
    server.daemon_threads = True
    return server
