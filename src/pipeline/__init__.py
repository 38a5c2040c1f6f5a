"""Reproducible ML experiment pipeline: DVC stages, Hydra configs, Lightning training, MLflow tracking."""

__version__ = "0.1.0"
