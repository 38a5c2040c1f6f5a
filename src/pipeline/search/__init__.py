"""Hyperparameter searches: Hydra's Optuna sweeper keys, on Optuna 4's ask/tell API and its storages."""
