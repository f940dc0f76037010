"""rank_sweep.track."""
