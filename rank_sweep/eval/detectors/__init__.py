"""rank_sweep.eval.detectors."""
