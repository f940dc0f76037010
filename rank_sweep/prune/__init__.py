"""rank_sweep.prune."""
