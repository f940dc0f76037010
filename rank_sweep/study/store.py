"""The vote store: one SQLite file, one row per vote, with rater id and UTC time.

A vote keeps the real run ids of both sides (the page never sees them) and which side the
rater preferred, so win rates can be recomputed from the raw rows at any time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rank_sweep.paths import REPO_ROOT

ENV_VOTES_DB = "RANK_SWEEP_VOTES_DB"
CHOICES = ("left", "right", "same")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep_id TEXT NOT NULL,
    rater TEXT NOT NULL,
    left_run TEXT NOT NULL,
    right_run TEXT NOT NULL,
    clip TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'same')),
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_sweep ON votes (sweep_id);
"""


def default_db() -> Path:
    """`$RANK_SWEEP_VOTES_DB`, else `<repo>/votes.db` (beside mlflow.db)."""
    return Path(os.environ.get(ENV_VOTES_DB) or REPO_ROOT / "votes.db")


@dataclass(frozen=True)
class Vote:
    sweep_id: str
    rater: str
    left_run: str
    right_run: str
    clip: str
    choice: str  # left | right | same
    created_at: str = ""

    @property
    def winner(self) -> str | None:
        return {"left": self.left_run, "right": self.right_run}.get(self.choice)

    @property
    def loser(self) -> str | None:
        return {"left": self.right_run, "right": self.left_run}.get(self.choice)


class VoteStore:
    """Thread-safe (the server is threaded): one connection per call, WAL journal."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def add(self, vote: Vote) -> int:
        if vote.choice not in CHOICES:
            raise ValueError(f"vote choice {vote.choice!r}; allowed: {', '.join(CHOICES)}")
        if not vote.rater.strip():
            raise ValueError("a vote needs a rater id")
        if vote.left_run == vote.right_run:
            raise ValueError("a vote compares two different runs")
        when = vote.created_at or datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._lock, self._connect() as con:
            cur = con.execute(
                "INSERT INTO votes (sweep_id, rater, left_run, right_run, clip, choice, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (vote.sweep_id, vote.rater.strip(), vote.left_run, vote.right_run, vote.clip,
                 vote.choice, when),
            )  # fmt: skip
            return int(cur.lastrowid)

    def votes(self, sweep_id: str | None = None) -> list[Vote]:
        sql = "SELECT sweep_id, rater, left_run, right_run, clip, choice, created_at FROM votes"
        args: tuple = ()
        if sweep_id is not None:
            sql, args = sql + " WHERE sweep_id = ?", (sweep_id,)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [Vote(*r) for r in rows]


def load_votes(sweep_id: str | None, db: Path | str | None = None) -> list[Vote]:
    """Votes of a sweep, [] when there is no store (never creates one)."""
    path = Path(db) if db is not None else default_db()
    if not path.is_file():
        return []
    return VoteStore(path).votes(sweep_id)
