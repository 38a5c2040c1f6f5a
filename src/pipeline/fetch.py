"""DVC stage `fetch`: download, copy or generate one dataset's raw files.

python -m pipeline.fetch data=mnist [mirror=/path/or/url]
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from pipeline.cli import hydra_app, report_user_errors
from pipeline.data.sources import build_source

log = logging.getLogger(__name__)


def fetch(cfg: DictConfig) -> None:
    """Put the raw files of ``cfg.data`` into ``<paths.raw_dir>/<name>``."""
    raw_dir = Path(cfg.paths.raw_dir) / cfg.data.name
    raw_dir.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s into %s (mirror: %s)", cfg.data.name, raw_dir, cfg.mirror or "none")
    source = build_source(cfg.data.source, cfg.data.name)
    source.fetch(raw_dir, mirror=cfg.mirror or None, timeout=float(cfg.download_timeout))


def run(cfg: DictConfig) -> None:
    report_user_errors(lambda: fetch(cfg))


def main() -> None:
    hydra_app(run, config_name="prepare")


if __name__ == "__main__":
    main()
