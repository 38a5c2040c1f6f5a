"""MLflow tracking: what each run records (runs), figures as callbacks, sweeps as parent/child runs.

Imported only where a run tracks: ``import pipeline.tracking`` does not import MLflow.
"""
