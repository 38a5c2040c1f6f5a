"""Config mistakes a user commonly makes fail before any work, naming the key, the value and what is expected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.config_schema import validate
from pipeline.errors import ConfigError
from pipeline.train import train
from tests.conftest import REPO_ROOT, make_cfg

# (overrides, the key the message must name, words of what is expected)
MISTAKES = [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc'", "valid integer"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5", "valid integer"),
    ("trainer.devices=-3", "trainer.devices=-3", "greater than or equal to -1"),
    ("trainer.precision=33", "trainer.precision=33", "'bf16-mixed'"),
    ("+trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5", "less than or equal to 1"),
    ("data.datamodule.batch_size=0", "data.datamodule.batch_size=0", "greater than or equal to 1"),
    ("data.preprocess.val_size=1.5", "data.preprocess.val_size=1.5", "less than 1"),
    ("data.preprocess.seed=-1", "data.preprocess.seed=-1", "greater than or equal to 0"),
    ("optimizer.lr=-1", "optimizer.lr=-1", "greater than 0"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1", "greater than or equal to 0"),
    ("optimizer=adam +optimizer.betas=[0.9,1.5]", "optimizer.betas[1]=1.5", "less than 1"),
    ("model.net.hidden=[64,0]", "model.net.hidden[1]=0", "greater than or equal to 1"),
    ("model=polynomial_regression model.net.degree=0", "model.net.degree=0", "greater than or equal to 1"),
    ("model=strong_cnn model.net.width=abc", "model.net.width='abc'", "valid integer"),
    ("seed=abc", "seed='abc'", "valid integer"),
]


@pytest.mark.parametrize(("overrides", "key", "expected"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_fails_before_the_data_loads_naming_its_key(tmp_path, overrides, key, expected):
    # no dataset exists under tmp_path: an error about the data would mean the check came too late
    cfg = make_cfg(tmp_path / "no-datasets", tmp_path, *overrides.split())
    with pytest.raises(ConfigError) as raised:
        train(cfg)
    message = str(raised.value)
    assert message.startswith("invalid config value: ") and key in message and expected in message, message


def test_every_mistake_of_a_config_is_listed_at_once(tmp_path):
    cfg = make_cfg(tmp_path, tmp_path, "optimizer.lr=0", "trainer.max_epochs=abc")
    with pytest.raises(ConfigError, match=r"values:\n  trainer.max_epochs='abc': .*\n  optimizer.lr=0: "):
        validate(cfg)


def test_values_the_schema_does_not_name_pass_and_good_values_validate(tmp_path):
    validate(
        make_cfg(
            tmp_path,
            tmp_path,
            "trainer.max_epochs=3",
            "+trainer.limit_train_batches=0.5",
            "trainer.precision=bf16-mixed",
            "trainer.devices=[0,1]",
            "+model.net.anything=1",
        )
    )


def test_the_command_line_reports_the_key_without_a_traceback(tmp_path):
    """The issue's example, as a user runs it: exit 1, the key and value named, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.train",
            "data=iris",
            "trainer.max_epochs=abc",
            f"paths.log_dir={tmp_path}",
            f"paths.processed_dir={tmp_path}/none",
            "logger=csv",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert "ConfigError: invalid config value: trainer.max_epochs='abc': Input should be a valid integer" in output
    assert "Traceback" not in output
