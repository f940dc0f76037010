"""One Hydra job end to end: identity (fingerprint, dirs), reporting (MLflow + Optuna), the run."""
