"""Where runs are recorded: the tracking store, its experiments, and where their artifacts go.

A local SQLite store (the default, ``sqlite:///<project>/mlflow.db``) keeps artifacts in
``mlruns/`` beside the database, whatever the working directory: MLflow's own default is
``./mlruns`` relative to wherever the process started, which scatters artifacts of runs
started from different folders (or from tests). A tracking server decides for itself
(``--artifacts-destination``), so nothing is set for one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

SQLITE_PREFIX = "sqlite:///"


def local_artifact_root(tracking_uri: str | None) -> Path | None:
    """``mlruns/`` beside a SQLite store's database file; None for servers and other stores."""
    if not tracking_uri or not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    return Path(tracking_uri.removeprefix(SQLITE_PREFIX)).resolve().parent / "mlruns"


def default_artifact_location(tracking_uri: str | None, experiment_name: str) -> str | None:
    """Where a new experiment of this store keeps its artifacts (None: the store's default)."""
    root = local_artifact_root(tracking_uri)
    return None if root is None else (root / experiment_name).as_uri()


# MLflow's serialization formats of a PyTorch model: "pt2" (torch.export: a traced graph, loads without
# running pickled code or importing this project; MLflow 3's default) or "pickle" (the module object:
# about 0.6 s faster to log here, and loads back as the trainable module, where `pipeline` is installed).
MODEL_FORMATS = ("pt2", "pickle")


class PipelineMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger``, with the artifact folder of a local store placed beside its database,
    and a switch for the pipeline's own model logging (``pytorch_model``: the trained model in MLflow's
    PyTorch flavour, saved as ``model_format``; see ``pipeline.tracking.model``)."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None = None,
                 pytorch_model: bool = True, model_format: str = "pt2", **kwargs: Any) -> None:
        if model_format not in MODEL_FORMATS:
            raise ValueError(f"logger.mlflow.model_format={model_format!r}: expected one of {', '.join(MODEL_FORMATS)}")
        location = artifact_location or default_artifact_location(tracking_uri, experiment_name)
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name, artifact_location=location,
                         **kwargs)
        self.tracking_uri = tracking_uri
        self.pytorch_model = pytorch_model
        self.model_format = model_format


def experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The id of experiment ``name`` (created, with the same artifact folder rule, when missing).

    Restores an experiment a user deleted in the UI: MLflow refuses to create a run in it,
    and refuses to create another of the same name.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri, name))
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id
