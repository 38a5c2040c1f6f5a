"""Transfer learning on tiny digits: phase 1 on 0-4, then only a new head on 5-9 over the frozen features."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.callbacks.transfer import TransferFeatures
from pipeline.errors import ModelConfigError
from pipeline.models.checkpoints import load_module
from pipeline.train import train
from tests.conftest import make_cfg

# module-scoped fixtures: the whole module runs in one test process (make test's --dist loadgroup)
pytestmark = pytest.mark.xdist_group("transfer")

SPY = "+callbacks.spy._target_=tests.test_transfer.Spy"


class Spy(Callback):
    """Records the weights when training starts and ends, and whether batch-norm layers were in train mode."""

    seen: ClassVar[dict[str, Any]] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        Spy.seen["start"] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        Spy.seen["bn_training"] = [m.training for m in pl_module.modules() if isinstance(m, _BatchNorm)]

    def on_train_end(self, trainer, pl_module) -> None:
        Spy.seen["end"] = {k: v.clone() for k, v in pl_module.state_dict().items()}


def net_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("net.")}


def phase_1(processed: Path, folder: Path, *overrides: str) -> Path:
    """Train on digits 0-4 for two epochs; the path of the last checkpoint."""
    train(make_cfg(processed, folder, "experiment=mnist_digits_0_4", "trainer.max_epochs=2", "test=false", *overrides))
    return folder / "run" / "checkpoints" / "last.ckpt"


# lenet: its head is net.11 = Linear(84, 5); strong_cnn (batch norm): net.20 = Linear(4·width, 5).
@pytest.mark.parametrize(
    ("model", "head", "head_size"), [("lenet", "net.11", 84 * 5 + 5), ("strong_cnn", "net.20", 16 * 5 + 5)]
)
def test_phase_2_trains_only_the_head_on_the_frozen_features(processed, tmp_path, model, head, head_size):
    model_args = [f"model={model}"] + (["model.net.width=4"] if model == "strong_cnn" else [])
    source = phase_1(processed, tmp_path / "phase1", *model_args)
    pretrained = net_state(torch.load(source, weights_only=True)["state_dict"])

    Spy.seen.clear()
    cfg = make_cfg(
        processed,
        tmp_path / "phase2",
        "experiment=mnist_transfer_5_9",
        *model_args,
        f"callbacks.transfer.checkpoint={source}",
        "trainer.max_epochs=2",
        "optimizer.lr=0.01",
        SPY,
    )
    metrics = train(cfg)

    start, end = net_state(Spy.seen["start"]), net_state(Spy.seen["end"])
    features = [k for k in end if not k.startswith(f"{head}.")]
    assert features and all(torch.equal(end[k], pretrained[k]) for k in features)  # batch-norm statistics too
    assert not torch.equal(end[f"{head}.weight"], start[f"{head}.weight"])  # the head learned
    assert not any(Spy.seen["bn_training"])  # frozen batch norm normalises with the pretrained statistics
    total = sum(v.numel() for k, v in end.items() if "running" not in k and "num_batches" not in k)
    assert metrics["transfer/trainable_params"] == head_size
    assert metrics["transfer/total_params"] == total

    # The phase-2 checkpoint rebuilds on its own: the callback is not part of the model.
    shutil.rmtree(tmp_path / "phase1")
    module, record = load_module(tmp_path / "phase2" / "run" / "checkpoints" / "last.ckpt", "classification")
    assert record["data"]["class_names"] == ["5", "6", "7", "8", "9"]
    rebuilt = module.state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in end.items())


def test_scratch_baseline_freezes_random_features_and_fine_tuning_trains_all(processed, tmp_path):
    Spy.seen.clear()
    metrics = train(
        make_cfg(
            processed, tmp_path / "scratch", "experiment=mnist_scratch_5_9", "trainer.max_epochs=1", "test=false", SPY
        )
    )
    start, end = net_state(Spy.seen["start"]), net_state(Spy.seen["end"])
    assert all(torch.equal(end[k], start[k]) for k in end if not k.startswith("net.11."))
    assert not torch.equal(end["net.11.weight"], start["net.11.weight"])
    assert metrics["transfer/trainable_params"] == 84 * 5 + 5

    source = tmp_path / "scratch" / "run" / "checkpoints" / "last.ckpt"
    metrics = train(
        make_cfg(
            processed,
            tmp_path / "finetune",
            "experiment=mnist_transfer_5_9",
            "trainer.max_epochs=1",
            f"callbacks.transfer.checkpoint={source}",
            "callbacks.transfer.freeze=false",
            "test=false",
            SPY,
        )
    )
    copied = net_state(torch.load(source, weights_only=True)["state_dict"])
    assert all(torch.equal(Spy.seen["start"][k], v) for k, v in copied.items() if not k.startswith("net.11."))
    assert metrics["transfer/trainable_params"] == metrics["transfer/total_params"]


@pytest.fixture(scope="module")
def foreign_checkpoints(processed, tmp_path_factory) -> dict[str, Path]:
    """A tiny_cnn classifier (other feature layers), a regression model and a (fake) GAN checkpoint."""
    root = tmp_path_factory.mktemp("foreign")
    found = {}
    for name, overrides in (
        ("tiny_cnn", ["data=mnist", "model=tiny_cnn"]),
        ("regression", ["data=line", "model=linear_regression"]),
    ):
        train(make_cfg(processed, root / name, *overrides, "trainer.max_epochs=1", "test=false"))
        found[name] = root / name / "run" / "checkpoints" / "last.ckpt"
    found["gan"] = root / "gan.ckpt"
    torch.save(
        {
            "state_dict": {"generator.0.weight": torch.zeros(3)},
            "pipeline": {"family": "gan", "model": {"_target_": "pipeline.models.gan.GAN"}, "data": {"name": "mnist"}},
        },
        found["gan"],
    )
    return found


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "tiny_cnn",
            r"\(pipeline.models.networks.tiny_cnn, trained on data=mnist with inputs of shape \[1, 16, 16\]\) "
            r"does not fit this model's feature layers: "
            r"net.0.weight has shape \[5, 1, 3, 3\] there but \[6, 1, 5, 5\] here",
        ),
        (
            "regression",
            r"holds a regression model \(pipeline.models.regression.RegressionModule, trained on data=line\), "
            r"but a classification model was asked for",
        ),
        ("gan", r"holds a gan model \(pipeline.models.gan.GAN, trained on data=mnist\), but a classification model"),
        ("missing", r"the source checkpoint .*missing.ckpt does not exist; train that model first"),
    ],
    ids=["other_net", "regression", "gan", "missing"],
)
def test_a_checkpoint_that_does_not_fit_fails_before_training(
    processed, tmp_path, foreign_checkpoints, source, message
):
    path = foreign_checkpoints.get(source, tmp_path / "missing.ckpt")
    cfg = make_cfg(processed, tmp_path, "experiment=mnist_transfer_5_9", f"callbacks.transfer.checkpoint={path}")
    with pytest.raises(ModelConfigError, match=message):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_lesson_presets_compose(processed, tmp_path):
    phase1, transfer, scratch = (
        make_cfg(processed, tmp_path, f"experiment={name}")
        for name in ("mnist_digits_0_4", "mnist_transfer_5_9", "mnist_scratch_5_9")
    )
    assert phase1.data.datamodule.classes == [0, 1, 2, 3, 4]
    assert transfer.data.datamodule.classes == scratch.data.datamodule.classes == [5, 6, 7, 8, 9]
    assert phase1.model == transfer.model == scratch.model  # phase 2's feature layers fit phase 1's weights
    assert transfer.callbacks.transfer.checkpoint.endswith("experiments/mnist_digits_0_4/model.ckpt")
    for cfg, checkpoint in ((transfer, transfer.callbacks.transfer.checkpoint), (scratch, None)):
        callback = instantiate(cfg.callbacks.transfer)
        assert isinstance(callback, TransferFeatures) and callback.checkpoint == checkpoint and callback.freeze_features
    assert "transfer" not in phase1.callbacks
