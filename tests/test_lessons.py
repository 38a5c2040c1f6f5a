"""The course's lessons hold on the real (generated) datasets, trained by the real presets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline.data.preparing import preprocess_dataset
from pipeline.data.sources import build_source
from pipeline.train import train
from tests.conftest import REPO_ROOT, make_cfg

# module-scoped fixtures: the whole module runs in one test process (make test's --dist loadgroup)
pytestmark = pytest.mark.xdist_group("lessons")

LESSON_DATASETS = ("circles", "xor", "spirals")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """circles, XOR and spirals exactly as `dvc repro` makes them (their configs' sources and splits)."""
    root = tmp_path_factory.mktemp("lesson")
    for name in LESSON_DATASETS:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            cfg = compose("prepare", overrides=[f"data={name}"])
        source = build_source(cfg.data.source, name)
        source.fetch(root / "raw" / name)
        preprocess_dataset(
            source, name, cfg.data.task, root / "raw" / name, root / "processed" / name, dict(cfg.data.preprocess)
        )
    return root / "processed"


@pytest.mark.slow
@pytest.mark.parametrize("data", LESSON_DATASETS)
def test_feature_extraction_lesson(generated, tmp_path, data):
    """A linear boundary on the raw features stays near chance; an MLP learns features that separate the classes."""
    accuracy = {}
    for model in ("logistic_regression", "mlp_classifier"):
        cfg = make_cfg(generated, tmp_path / model, "experiment=feature_extraction", f"data={data}", f"model={model}")
        accuracy[model] = train(cfg)["test/acc"]
    assert accuracy["logistic_regression"] < 0.75
    assert accuracy["mlp_classifier"] >= 0.95
