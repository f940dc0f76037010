"""rank_sweep.sweep: Hydra multirun callbacks (MLflow parent run, Optuna study)."""
