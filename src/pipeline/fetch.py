"""DVC stage `fetch`: download, copy or generate one dataset's raw files.

    python -m pipeline.fetch data=mnist [mirror=/path/or/url]
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from pipeline.stage import CONFIG_PATH, build_source, dataset_dirs, run_reporting_user_errors

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prepare")
def main(cfg: DictConfig) -> None:
    def fetch() -> None:
        raw_dir, _ = dataset_dirs(cfg)
        raw_dir.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s into %s (mirror: %s)", cfg.data.name, raw_dir, cfg.mirror or "none")
        build_source(cfg).fetch(raw_dir, mirror=cfg.mirror or None, timeout=float(cfg.download_timeout))

    run_reporting_user_errors(fetch)


if __name__ == "__main__":
    main()
