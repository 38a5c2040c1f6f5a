"""Write the composed training config of an experiment: what a DVC train stage depends on.

    python -m pipeline.compose experiments/spirals_mlp/config.yaml experiment=spirals_mlp

A train stage that depended on ``conf/`` as a whole would re-train every experiment
after any config edit; depending on the composed result re-trains exactly the
experiments whose effective config changed. Interpolations are kept as written (the
run folder is only known at run time), and keys are sorted so the file is stable.
"""

from __future__ import annotations

import sys

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from pipeline.atomic import atomic_open
from pipeline.cli import config_dir, setup
from pipeline.config_schema import validate
from pipeline.errors import PipelineError

USAGE = "usage: python -m pipeline.compose <output.yaml> [override ...]"


def compose_train_config(overrides: list[str]) -> str:
    """The composed config as sorted YAML, interpolations kept; its values checked against the schema."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    validate(cfg)
    return OmegaConf.to_yaml(cfg, sort_keys=True)


def main(argv: list[str] | None = None) -> None:
    setup()
    args = sys.argv[1:] if argv is None else argv
    if not args or "=" in args[0] or args[0].startswith("-"):
        sys.exit(USAGE)
    try:
        text = compose_train_config(args[1:])
    except (HydraException, PipelineError) as exc:  # an unknown key or option, a value out of range
        sys.exit(f"{type(exc).__name__}: {exc}")
    with atomic_open(args[0], "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
