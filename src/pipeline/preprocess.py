"""DVC stage `preprocess`: validate one dataset's raw files and write model-ready arrays + meta.json.

python -m pipeline.preprocess data=spirals [data.preprocess.val_size=0.2]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from pipeline.cli import hydra_app, report_user_errors
from pipeline.config_schema import validate
from pipeline.data.preparing import preprocess_dataset
from pipeline.data.sources import build_source


def preprocess(cfg: DictConfig) -> None:
    """``<paths.raw_dir>/<name>`` parsed, validated and split into ``<paths.processed_dir>/<name>``."""
    validate(cfg)
    name = cfg.data.name
    split = cast(dict[str, Any], OmegaConf.to_container(cfg.data.preprocess, resolve=True))
    preprocess_dataset(
        build_source(cfg.data.source, name),
        name,
        cfg.data.task,
        Path(cfg.paths.raw_dir) / name,
        Path(cfg.paths.processed_dir) / name,
        split,
    )


def run(cfg: DictConfig) -> None:
    report_user_errors(lambda: preprocess(cfg))


def main() -> None:
    hydra_app(run, config_name="prepare")


if __name__ == "__main__":
    main()
