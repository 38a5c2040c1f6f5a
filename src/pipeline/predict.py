"""Run a trained model on new files: a CSV of table rows, a folder of images, or a NumPy array.

python -m pipeline.predict model_uri=models:/spirals@champion input=new_points.csv output=predictions.csv
python -m pipeline.predict model_uri=runs:/<run id>/model input=digits/ output=digits.csv
python -m pipeline.predict model_uri=experiments/mnist_cnn/model.ckpt input=batch.npy output=out.csv
python -m pipeline.predict model_uri=experiments/addition_rnn/model.ckpt input=questions.txt output=answers.csv
python -m pipeline.predict model_uri=models:/cartpole_dqn@champion input=observations.csv output=actions.csv
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline.atomic import atomic_path
from pipeline.cli import hydra_app, report_user_errors
from pipeline.data.inputs import read_inputs
from pipeline.errors import ConfigError
from pipeline.tracking.loading import TrainedModel, load_trained_model

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> Path:
    """Load the model, read the inputs as its training data was (a bad file fails before any prediction),
    predict in batches, write the CSV atomically."""
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size={cfg.batch_size}: expected a positive number of rows")
    model = load_trained_model(str(cfg.model_uri), str(cfg.tracking_uri))
    x, identifiers = read_inputs(cfg.input, model.spec)
    log.info("predicting %d input(s) of %s with %s", len(x), cfg.input, model.source)
    outputs = np.concatenate([model.predict(x[i : i + cfg.batch_size]) for i in range(0, len(x), cfg.batch_size)])
    table = pd.concat([identifiers.reset_index(drop=True), prediction_table(model, outputs)], axis=1)
    output = Path(cfg.output)
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False)
    log.info("wrote %d prediction(s) to %s", len(table), output)
    return output


def prediction_table(model: TrainedModel, outputs: np.ndarray) -> pd.DataFrame:
    """``prediction`` (a class name, the regressor's value, or a sequence model's answer as text) and, for
    classifiers, its ``probability``; an agent's ``action`` and ``value_<action>`` per action."""
    if model.output == "identity":
        return pd.DataFrame({"prediction": outputs[:, 0] if outputs.ndim == 2 else outputs})
    if model.output == "text":  # a sequence model's answers
        return pd.DataFrame({"prediction": outputs})
    if model.output == "action_values":  # an agent's greedy action, and every action's value
        values = {f"value_{name}": outputs[:, i] for i, name in enumerate(model.spec.class_names)}
        return pd.DataFrame({"action": np.asarray(model.spec.class_names)[outputs.argmax(axis=1)], **values})
    probabilities = np.column_stack([1 - outputs[:, 0], outputs[:, 0]]) if model.output == "sigmoid" else outputs
    best = probabilities.argmax(axis=1)
    names = np.asarray(model.spec.class_names)
    return pd.DataFrame({"prediction": names[best], "probability": probabilities[np.arange(len(best)), best]})


def run(cfg: DictConfig) -> None:
    report_user_errors(lambda: predict(cfg))


def main() -> None:
    hydra_app(run, config_name="predict")


if __name__ == "__main__":
    main()
