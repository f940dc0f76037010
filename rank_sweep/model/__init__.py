"""rank_sweep.model."""
