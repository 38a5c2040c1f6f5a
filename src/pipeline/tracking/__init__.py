"""MLflow tracking: one owner of a run's life (run), Lightning's logger into it (logger), what a run records
about its origin (provenance), sweeps as parent/child runs (sweep).

Imported only where a run tracks: ``import pipeline.tracking`` does not import MLflow.
"""
