"""The losses a run records are the losses: sample-weighted means, checked against independent computations.

Every dataset here has a partial last batch in each split (the case a plain mean of batch
means gets wrong), and the values are read back from the real MLflow store and history.csv.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from pipeline.models.checkpoints import load_module
from pipeline.models.metrics import WeightedMean
from pipeline.train import train
from tests.conftest import history, make_cfg, only_run


def test_weighted_mean_weighs_each_batch_by_its_size():
    mean = WeightedMean()
    mean.update(torch.tensor(1.0), weight=64)
    mean.update(torch.tensor(10.0), weight=12)
    assert float(mean.compute()) == pytest.approx((64 * 1.0 + 12 * 10.0) / 76)  # 2.42, not 5.5
    mean.update(torch.tensor(float("nan")), weight=3)
    assert math.isnan(float(mean.compute()))  # a diverged batch stays visible to the NaN guard


def test_training_accuracy_and_macro_f1_match_sklearn_over_uneven_batches_with_a_class_missing():
    """The epoch's training values are the accuracy and macro F1 of every training prediction."""
    from functools import partial

    from sklearn.metrics import accuracy_score, f1_score

    from pipeline.models.classification import ClassificationModule
    from pipeline.models.networks import mlp

    torch.manual_seed(0)
    module = ClassificationModule(num_classes=5, net=partial(mlp, hidden=[8]), input_shape=[3], optimizer=None)
    x = torch.randn(23, 3)
    y = torch.tensor([0, 1, 3, 4] * 5 + [0, 1, 3])  # class 2 never a label
    predictions = []
    with torch.no_grad():
        for rows in torch.arange(23).split(10):  # batches of 10, 10 and 3
            module.model_step((x[rows], y[rows]), "train")
            module.model_step((x[rows], y[rows]), "val")  # the same batches through the checked metrics
            predictions.append(module(x[rows]).argmax(1))
    predicted = torch.cat(predictions).numpy()
    train, val = module.epoch_metrics("train").compute(), module.epoch_metrics("val").compute()
    assert float(train["train/acc"]) == pytest.approx(accuracy_score(y.numpy(), predicted))
    seen = sorted(set(y.tolist()) | set(predicted.tolist()))  # torchmetrics leaves out classes never seen
    assert float(train["train/f1"]) == pytest.approx(f1_score(y.numpy(), predicted, average="macro", labels=seen))
    assert torch.equal(train["train/acc"], val["val/acc"]) and torch.equal(train["train/f1"], val["val/f1"])


@pytest.mark.parametrize("num_classes", [2, 5])  # binary (accuracy, F1, AUROC's kept scores) and multi-class
def test_metric_updates_applied_32_batches_at_a_time_give_bitwise_the_values_of_one_update_per_batch(num_classes):
    from functools import partial

    from pipeline.models.classification import ClassificationModule
    from pipeline.models.networks import mlp

    torch.manual_seed(0)
    module = ClassificationModule(
        num_classes=num_classes, net=partial(mlp, hidden=[8]), input_shape=[3], optimizer=None
    )
    reference = module._metrics("train/")  # the same metrics, updated once per batch
    x, y = torch.randn(523, 3), torch.randint(0, num_classes, (523,))
    with torch.no_grad():
        for rows in torch.arange(523).split(7):  # 75 batches: two groups of 32, then 11 (the last one partial)
            module.model_step((x[rows], y[rows]), "train")
            logits = module(x[rows])
            reference.update(torch.sigmoid(logits[:, 0]) if num_classes == 2 else logits, y[rows])
    assert len(module.pending_updates["train"].pending) == 11  # not yet in the metrics' states
    grouped, expected = module.epoch_metrics("train").compute(), reference.compute()
    names = ["acc", "f1", "auroc"] if num_classes == 2 else ["acc", "f1"]
    assert sorted(grouped) == sorted(expected) == sorted(f"train/{name}" for name in names)
    for name, value in expected.items():
        assert torch.equal(grouped[name], value), name


def test_an_mse_regression_logs_loss_equal_to_mse_with_partial_batches(processed, tmp_path, mlflow_store):
    # line: 120 train, 40 val, 40 test rows; batches of 32 leave 24 and 8 in the last batch of each split
    cfg = make_cfg(
        processed,
        tmp_path,
        "logger=mlflow",
        "data=line",
        "model=mlp_regression",
        "model.loss=mse",
        "trainer.max_epochs=3",
        "data.datamodule.batch_size=32",
        "task_name=mse",
    )
    metrics = train(cfg)
    assert metrics["test/loss"] == pytest.approx(metrics["test/mse"], rel=1e-5)

    client, run = MlflowClient(mlflow_store), only_run(mlflow_store, "mse")
    for stage in ("train", "val"):
        losses = client.get_metric_history(run.info.run_id, f"{stage}/loss")
        mses = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"{stage}/mse")}
        assert len(losses) == 3
        for loss in losses:
            assert loss.value == pytest.approx(mses[loss.step], rel=1e-5), (stage, loss.step)
    assert run.data.metrics["test/loss"] == pytest.approx(run.data.metrics["test/mse"], rel=1e-5)
    for row in history(tmp_path / "run" / "history.csv"):
        assert float(row["train/loss"]) == pytest.approx(float(row["train/mse"]), rel=1e-5)
        assert float(row["val/loss"]) == pytest.approx(float(row["val/mse"]), rel=1e-5)


@pytest.mark.parametrize("data", ["blobs", "mnist"])  # binary (one logit, BCE) and 10 classes (softmax CE)
def test_a_classifier_test_loss_is_the_cross_entropy_of_its_predictions(processed, tmp_path, mlflow_store, data):
    # 40 test rows (tabular or 16x16 images) in batches of 32 and 8
    cfg = make_cfg(
        processed,
        tmp_path,
        "logger=mlflow",
        f"data={data}",
        "model=mlp_classifier",
        "trainer.max_epochs=3",
        "data.datamodule.batch_size=32",
        "task_name=clf",
    )
    train(cfg)
    run = only_run(mlflow_store, "clf")

    checkpoint = next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))  # the best one, which was tested
    module, record = load_module(checkpoint)
    x = torch.from_numpy(np.load(processed / data / "test_x.npy")).float()
    y = torch.from_numpy(np.load(processed / data / "test_y.npy")).long()
    mean, std = (torch.tensor(record["data"]["normalization"][k]) for k in ("mean", "std"))
    if x.ndim == 4:  # uint8 pixels, normalised per channel
        x, mean, std = x / 255, mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    with torch.no_grad():
        logits = module((x - mean) / std)
    if len(record["data"]["class_names"]) == 2:
        expected = F.binary_cross_entropy_with_logits(logits[:, 0], y.float()).item()  # the mean over all rows
        predicted = (logits[:, 0] > 0).long()
    else:
        expected = F.cross_entropy(logits, y).item()
        predicted = logits.argmax(1)
    assert len(y) % 32 != 0
    assert run.data.metrics["test/loss"] == pytest.approx(expected, rel=1e-5)
    # two batches, fewer than the 32 whose metric updates are applied together: applied at the epoch's end
    assert run.data.metrics["test/acc"] == pytest.approx((predicted == y).double().mean().item(), rel=1e-6)


def test_gan_losses_per_epoch_are_the_weighted_means_of_its_batches(processed, tmp_path, mlflow_store):
    # tiny digits, every class: 100 training images in batches of 32, 32, 32 and 4
    cfg = make_cfg(
        processed,
        tmp_path,
        "logger=mlflow",
        "experiment=mnist_gan",
        "model.scorer_checkpoint=null",
        "callbacks.model_checkpoint=null",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "data.datamodule.batch_size=32",
        "data.datamodule.classes=null",
        "callbacks.gan_progress=null",
        "task_name=gan",
    )
    train(cfg)
    client, run = MlflowClient(mlflow_store), only_run(mlflow_store, "gan")
    rows = history(tmp_path / "run" / "history.csv")
    sizes = [32, 32, 32, 4]
    for name in ("d_loss", "g_loss"):
        steps = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"train/{name}_step")}
        assert sorted(steps) == list(range(8))
        epochs = [
            m.value for m in sorted(client.get_metric_history(run.info.run_id, f"train/{name}"), key=lambda m: m.step)
        ]
        for epoch in range(2):
            batch_values = [steps[4 * epoch + i] for i in range(4)]
            expected = sum(n * v for n, v in zip(sizes, batch_values, strict=False)) / sum(sizes)
            assert epochs[epoch] == pytest.approx(expected, rel=1e-5)
            assert float(rows[epoch][f"train/{name}"]) == pytest.approx(expected, rel=1e-5)
