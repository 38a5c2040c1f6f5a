"""DVC stage `preprocess`: validate one dataset's raw files and write model-ready arrays + meta.json.

    python -m pipeline.preprocess data=spirals [data.preprocess.val_size=0.2]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.data.processed import preprocess_dataset
from pipeline.stage import CONFIG_PATH, build_source, dataset_dirs, run_reporting_user_errors


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prepare")
def main(cfg: DictConfig) -> None:
    def preprocess() -> None:
        raw_dir, processed_dir = dataset_dirs(cfg)
        split = OmegaConf.to_container(cfg.data.preprocess, resolve=True)
        preprocess_dataset(build_source(cfg), cfg.data.name, cfg.data.task, raw_dir, processed_dir, split)

    run_reporting_user_errors(preprocess)


if __name__ == "__main__":
    main()
