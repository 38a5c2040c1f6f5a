"""A sequence model as MLflow serves it: a python-function model whose input and output are text.

``mlflow.pyfunc.load_model(uri).predict(["12+345", "7+8"])`` returns ``["357", "15"]``, and
``mlflow models serve`` answers ``{"inputs": ["12+345"]}`` with ``{"predictions": ["357"]}``.
MLflow reads the signature (a list of strings in and out) from the type hints of ``predict``.
"""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc import PythonModel

from pipeline.tracking.model import QuestionAnswerer


class TextModel(PythonModel):
    """Questions in, answers out, by the wrapped ``QuestionAnswerer`` (a question the model cannot read, such
    as ``12*3``, is refused with the characters it takes)."""

    def __init__(self, answerer: QuestionAnswerer) -> None:
        self.answerer = answerer

    # MLflow 3 takes predict without its context argument, and reads the signature from these type hints
    def predict(self, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:  # type: ignore[override]
        return self.answerer(model_input)
