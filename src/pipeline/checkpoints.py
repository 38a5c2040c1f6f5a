"""Checkpoints that describe themselves: which family, model config and dataset produced them.

Every checkpoint written by ``pipeline.train`` carries a ``"pipeline"`` entry of plain
values (the composed ``model`` config, the dataset's shape, classes and normalisation),
so a checkpoint alone rebuilds its model (``load_module``) and a checkpoint of the wrong
family is refused with a clear message instead of a wall of missing state-dict keys.
Everything stays loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback

from pipeline.models.base import ModelConfigError

KEY = "pipeline"


def model_family(target: str) -> str:
    """The family (``regression``, ``classification``, ``gan``) of a model class named by its ``_target_``."""
    return getattr(get_class(target), "family", target)


def data_record(datamodule: Any, datamodule_config: dict[str, Any]) -> dict[str, Any]:
    """What a model needs to know about its dataset to be rebuilt and fed the same inputs,
    and the datamodule config that served it (``pipeline.evaluate`` tests on it by default)."""
    return {"datamodule": datamodule_config, "name": datamodule.meta["name"], "task": datamodule.task,
            "input_shape": list(datamodule.input_shape),
            "class_names": list(datamodule.class_names), "normalize": bool(datamodule.normalize),
            "normalization": datamodule.meta["normalization"]}


class RecordPipelineConfig(Callback):
    """Adds the ``pipeline`` entry (family, model config, data record) to every checkpoint it saves."""

    def __init__(self, model_config: dict[str, Any], data: dict[str, Any]) -> None:
        self.record = {"family": model_family(model_config["_target_"]), "model": model_config, "data": data}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = self.record


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (weights-only load); a clear error for a missing file or a foreign checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ModelConfigError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise ModelConfigError(f"checkpoint {path} cannot be read as a weights-only torch checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict) or KEY not in checkpoint or "state_dict" not in checkpoint:
        raise ModelConfigError(
            f"checkpoint {path} was not written by pipeline.train (it has no '{KEY}' record of its model config)")
    return checkpoint


def check_family(path: str | Path, expected: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Refuse a checkpoint of another model family, naming both; returns the checkpoint."""
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path)
    record = checkpoint[KEY]
    if record["family"] != expected:
        raise ModelConfigError(
            f"checkpoint {path} holds a {record['family']} model ({record['model']['_target_']}, trained on "
            f"data={record['data']['name']}), but a {expected} model was asked for")
    return checkpoint


def load_module(path: str | Path, family: str | None = None,
                model_config: dict[str, Any] | None = None) -> tuple[L.LightningModule, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode on the CPU.

    ``model_config`` builds that config instead of the recorded one (its family must match);
    ``family`` only checks. Returns the module and the checkpoint's ``pipeline`` record (its
    dataset's shape, classes and normalisation, which a caller needs to feed it inputs).
    """
    checkpoint = read_checkpoint(path)
    record = checkpoint[KEY]
    if model_config is not None:
        family = model_family(model_config["_target_"])
    if family is not None:
        check_family(path, family, checkpoint)
    data = record["data"]
    shape_args: dict[str, Any] = {"input_shape": data["input_shape"]}
    if data["task"] == "classification":
        shape_args["num_classes"] = len(data["class_names"])
    try:
        module = instantiate(without_retired_keys(model_config or record["model"]), optimizer=None, scheduler=None,
                             _convert_="all", **shape_args)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ModelConfigError):
            raise exc.__cause__ from None
        raise ModelConfigError(f"checkpoint {path}: its model config does not build: {exc}") from None
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise ModelConfigError(
            f"checkpoint {path} ({record['model']['_target_']} trained on data={data['name']}) does not fit "
            f"the model config: {str(exc).splitlines()[0]} {_summarise_key_errors(exc)}") from None
    return module.eval(), record


def without_retired_keys(model_config: dict[str, Any]) -> dict[str, Any]:
    """The model config without the keys its class lists as ``retired_hparams``: settings older checkpoints
    recorded that have moved elsewhere (e.g. the GAN's grid interval, now a callback's), so they still load.

    Only listed keys are dropped: any other unknown key still fails, naming itself."""
    retired = getattr(get_class(model_config["_target_"]), "retired_hparams", frozenset())
    return {key: value for key, value in model_config.items() if key not in retired}


def _summarise_key_errors(exc: RuntimeError) -> str:
    """The first lines of PyTorch's state-dict mismatch report, which can run to hundreds of keys."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return " ".join(lines[:3])[:600]


def newest_last_checkpoint(log_dir: str | Path, task_name: str) -> str:
    """The newest ``<log_dir>/<task_name>/runs/*/checkpoints/last.ckpt``: what ``resume=true`` continues."""
    candidates = list(Path(log_dir, task_name, "runs").glob("*/checkpoints/last.ckpt"))
    if not candidates:
        raise ModelConfigError(
            f"resume=true: no run of task_name={task_name} has a checkpoint to resume from "
            f"({Path(log_dir, task_name, 'runs')}/*/checkpoints/last.ckpt); train without resume=true first, or "
            "give ckpt_path=<checkpoint>")
    return str(max(candidates, key=lambda path: path.stat().st_mtime))
