"""Checkpoints that describe themselves: which family, model config and dataset produced them.

Every checkpoint written by ``pipeline.train`` carries a ``"pipeline"`` entry of plain
values (the composed ``model`` config and the dataset's ``DatasetSpec`` record, written by
``pipeline.callbacks.checkpoint_record``),
so a checkpoint alone rebuilds its model (``load_module``) and a checkpoint of the wrong
family is refused with a clear message instead of a wall of missing state-dict keys.
Everything stays loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class

from pipeline.data.spec import DatasetSpec
from pipeline.errors import ModelConfigError, build

KEY = "pipeline"


def model_family(target: str) -> str:
    """The family (``regression``, ``classification``, ``gan``) of a model class named by its ``_target_``."""
    return getattr(get_class(target), "family", target)


def checkpoint_record(
    model_config: dict[str, Any], spec: DatasetSpec, datamodule_config: dict[str, Any]
) -> dict[str, Any]:
    """The ``pipeline`` entry of a checkpoint: the model's family and config, the dataset's spec, and the
    datamodule config that served it (``pipeline.evaluate`` tests on it by default)."""
    return {
        "family": model_family(model_config["_target_"]),
        "model": model_config,
        "data": {"datamodule": datamodule_config, **spec.record()},
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (weights-only load); a clear error for a missing file or a foreign checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ModelConfigError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelConfigError(f"checkpoint {path} cannot be read as a weights-only torch checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict) or KEY not in checkpoint or "state_dict" not in checkpoint:
        raise ModelConfigError(
            f"checkpoint {path} was not written by pipeline.train (it has no '{KEY}' record of its model config)"
        )
    return checkpoint


def check_family(path: str | Path, expected: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Refuse a checkpoint of another model family, naming both; returns the checkpoint."""
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path)
    record = checkpoint[KEY]
    if record["family"] != expected:
        raise ModelConfigError(
            f"checkpoint {path} holds a {record['family']} model ({record['model']['_target_']}, trained on "
            f"data={record['data']['name']}), but a {expected} model was asked for"
        )
    return checkpoint


def load_module(
    path: str | Path, family: str | None = None, model_config: dict[str, Any] | None = None
) -> tuple[L.LightningModule, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode on the CPU.

    ``model_config`` builds that config instead of the recorded one (its family must match);
    ``family`` only checks. Returns the module and the checkpoint's ``pipeline`` record (its
    ``data`` is the dataset's spec, ``DatasetSpec.from_record``, which a caller needs to feed it inputs).
    """
    checkpoint = read_checkpoint(path)
    record = checkpoint[KEY]
    if model_config is not None:
        family = model_family(model_config["_target_"])
    if family is not None:
        check_family(path, family, checkpoint)
    data = record["data"]
    module = build(
        model_config or record["model"],
        error=ModelConfigError,
        where=f"checkpoint {path}: its model config does not build",
        optimizer=None,
        scheduler=None,
        _convert_="all",
        **DatasetSpec.from_record(data).model_size(),
    )
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise ModelConfigError(
            f"checkpoint {path} ({record['model']['_target_']} trained on data={data['name']}) does not fit "
            f"the model config: {str(exc).splitlines()[0]} {_summarise_key_errors(exc)}"
        ) from None
    return module.eval(), record


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
            "give ckpt_path=<checkpoint>"
        )
    return str(max(candidates, key=lambda path: path.stat().st_mtime))
