"""The model registry's champion: the alias moves to a new version only when it beats the champion."""

from __future__ import annotations

import math
import shutil

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking.registry import CHAMPION, crown_if_better, current_champion


@pytest.fixture
def client(tmp_path, migrated_mlflow_db) -> MlflowClient:
    shutil.copyfile(migrated_mlflow_db, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("m")
    return client


def new_version(client: MlflowClient, tmp_path, value: float) -> str:
    version = client.create_model_version("m", source=(tmp_path / "model").as_uri())
    client.set_model_version_tag("m", version.version, "val/acc", repr(value))
    return str(version.version)  # the store gives int versions, the REST API strings: compared as strings


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_champion_moves_only_to_a_better_version(client, tmp_path, mode):
    sign = 1 if mode == "max" else -1
    first = new_version(client, tmp_path, sign * 0.8)
    assert current_champion(client, "m") is None
    assert crown_if_better(client, "m", first, sign * 0.8, "val/acc", mode)  # no champion yet
    worse = new_version(client, tmp_path, sign * 0.7)
    assert not crown_if_better(client, "m", worse, sign * 0.7, "val/acc", mode)
    tie = new_version(client, tmp_path, sign * 0.8)
    assert not crown_if_better(client, "m", tie, sign * 0.8, "val/acc", mode)  # to beat is to be better
    assert str(current_champion(client, "m").version) == first
    better = new_version(client, tmp_path, sign * 0.9)
    assert crown_if_better(client, "m", better, sign * 0.9, "val/acc", mode)
    assert str(current_champion(client, "m").version) == better
    assert client.get_model_version("m", first).aliases == []  # the old champion keeps its version


def test_a_version_without_the_metric_does_not_take_the_crown(client, tmp_path):
    first = new_version(client, tmp_path, 0.8)
    crown_if_better(client, "m", first, 0.8, "val/acc", "max")
    assert not crown_if_better(client, "m", new_version(client, tmp_path, 0.9), math.nan, "val/acc", "max")
    assert not crown_if_better(client, "m", new_version(client, tmp_path, 0.9), None, "val/acc", "max")
    assert str(client.get_model_version_by_alias("m", CHAMPION).version) == first
    with pytest.raises(ValueError, match="optimized_mode"):
        crown_if_better(client, "m", first, 0.8, "val/acc", "best")
