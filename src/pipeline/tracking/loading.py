"""A trained model as a function of raw inputs, from wherever it is kept: the registry, a run, a checkpoint.

- ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run id>/model`` or
  ``models:/<model id>``: the logged MLflow model (``pipeline.tracking.model``), loaded with
  ``mlflow.pyfunc`` on the CPU; the metadata logged with it says what it returns and what data
  it was trained on;
- a checkpoint path (``.ckpt``): the module it rebuilds, behind the same ``Predictor``.

Both take raw inputs (pixel values 0-255, table features; a sequence model's questions as text) and
apply the training data's ``ModelInput`` themselves, so no caller re-derives normalisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.spec import DatasetSpec
from pipeline.errors import ModelConfigError

PREDICTING_OUTPUTS = ("softmax", "sigmoid", "identity", "action_values", "text")


@dataclass(frozen=True)
class TrainedModel:
    """``predict``: raw inputs ``(n, *spec.input_shape)`` float32 → probabilities or values ``(n, k)``; for a
    sequence model, questions ``(n,)`` as text → answers ``(n,)`` as text."""

    predict: Callable[[np.ndarray], np.ndarray]
    spec: DatasetSpec
    # softmax, sigmoid (binary: the positive class), identity (regression), action_values (an agent's, per
    # action) or text (sequence models)
    output: str
    source: str


def load_trained_model(uri: str, tracking_uri: str | None = None) -> TrainedModel:
    """The model at ``uri`` (an MLflow model URI or a checkpoint path); a GAN is refused, naming it."""
    if uri.endswith(".ckpt") or Path(uri).exists():
        return _from_checkpoint(Path(uri))
    return _from_mlflow(uri, tracking_uri)


def _from_checkpoint(path: Path) -> TrainedModel:
    import torch

    from pipeline.models.checkpoints import load_module
    from pipeline.tracking.model import Predictor, QuestionAnswerer, output_kind

    if not path.is_file():
        raise ModelConfigError(f"model_uri={path}: no such checkpoint (or give an MLflow URI: models:/<name>@<alias>)")
    module, record = load_module(path)
    if module.family == "gan":
        raise ModelConfigError(
            f"{path} is a GAN checkpoint: a GAN generates images, predict takes classifiers, regressors, agents "
            "and sequence models"
        )
    spec = DatasetSpec.from_record(record["data"])
    predictor = Predictor(module.get_submodule("net"), spec, output_kind(module)).eval()
    if module.family == "sequence":
        answerer = QuestionAnswerer(predictor, spec.encoding or {})
        return TrainedModel(lambda questions: np.asarray(answerer(questions.tolist())), spec, "text", str(path))

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return predictor(torch.from_numpy(x)).numpy()

    return TrainedModel(predict, spec, predictor.output, str(path))


def _from_mlflow(uri: str, tracking_uri: str | None) -> TrainedModel:
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.run import _scoped_tracking_uri

    try:
        with _scoped_tracking_uri(tracking_uri) if tracking_uri else contextlib.nullcontext():
            # the CPU: a pt2 model exported on the CPU cannot move to a GPU, which pyfunc would pick
            model = mlflow.pyfunc.load_model(uri, model_config={"device": "cpu"})
    except MlflowException as error:
        raise ModelConfigError(f"model_uri={uri}: {error.message}") from None
    metadata: dict[str, Any] = model.metadata.metadata or {}
    if "data" not in metadata:
        raise ModelConfigError(
            f"model_uri={uri}: logged without the pipeline's metadata (before predict existed); "
            "give its checkpoint instead (the run's checkpoints/ artifact)"
        )
    if metadata.get("output") == "sequence":  # token ids in, per-character probabilities out
        raise ModelConfigError(
            f"model_uri={uri}: a sequence model logged before they took text; give its checkpoint instead "
            "(the run's checkpoints/ artifact), or train it again"
        )
    if metadata.get("output") not in PREDICTING_OUTPUTS:
        raise ModelConfigError(
            f"model_uri={uri} is a {metadata.get('family')} model: predict takes classifiers, regressors, agents "
            "and sequence models"
        )

    def predict(x: np.ndarray) -> np.ndarray:
        if x.dtype.kind in "OU":  # questions for a text model
            return np.asarray(model.predict(x.tolist()))
        return np.asarray(model.predict(np.require(x, np.float32, ["C", "W"])))  # torch wants writable arrays

    return TrainedModel(predict, DatasetSpec.from_record(metadata["data"]), str(metadata["output"]), uri)
