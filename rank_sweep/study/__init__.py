"""Blind A/B study: a local page shows sample videos of two runs from the same first frame,
sides randomised and names hidden; votes go to SQLite (`store.py`) and become win rates
and a Bradley-Terry ranking in the report (`rank_sweep.report.votes`)."""
