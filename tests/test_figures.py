"""Figures as artifacts: every plotting function draws a valid PNG, and the figure callbacks put the right
figures in the run folder and in the MLflow run, for each family, and none when they are left out."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict
from PIL import Image

from pipeline.callbacks import drawing as figures
from pipeline.train import train
from tests.conftest import REPO_ROOT, make_cfg

FAST = ("callbacks.early_stopping=null", "callbacks.last_checkpoint=null")


def assert_png(path: str | Path) -> Image.Image:
    """The file is a non-empty PNG that PIL decodes."""
    assert Path(path).stat().st_size > 0
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
        return image


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run from tmp_path: MLflow puts a SQLite store's artifacts in ./mlruns, which must not be the project's."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def mlflow_figures(store: str, tmp_path: Path, subdir: str = "figures") -> dict[str, Path]:
    """The one MLflow run's artifacts under ``subdir``, downloaded: {name: local path}."""
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    return {
        Path(a.path).name: Path(client.download_artifacts(run_id, a.path, str(tmp_path)))
        for a in client.list_artifacts(run_id, subdir)
        if not a.is_dir
    }


# --- the plotting functions ----------------------------------------------------------------------------

ROWS = [
    {
        "epoch": e,
        "step": 10 * e,
        "train/loss": 1 / (e + 1),
        "val/loss": 1.2 / (e + 1),
        "train/acc": 0.5 + e / 10,
        "val/acc": 0.45 + e / 10,
        "train/loss_step": 0.9,
        "lr-Adam": 1e-3,
    }
    for e in range(4)
]
GAN_ROWS = [
    {
        "epoch": e,
        "train/d_loss": 0.7,
        "train/g_loss": 1.4 - e / 10,
        "val/fid": 30.0 - e,
        "lr-Adam": 1e-3,
        "lr-Adam-1": 1e-3,
    }
    for e in range(3)
]


@pytest.mark.parametrize(
    "name",
    [
        "loss_curves",
        "gan_curves",
        "decision_boundary",
        "fitted_curve",
        "confusion_matrix",
        "misclassified",
        "misclassified_rgb",
        "labelled_grid",
    ],
)
def test_every_plotting_function_writes_a_valid_png(tmp_path, name):
    rng = np.random.default_rng(0)
    x2, labels = rng.normal(size=(60, 2)), rng.integers(0, 3, 60)
    x1 = rng.uniform(-1, 1, 50)
    grid = figures.image_grid(torch.rand(12, 1, 8, 8), nrow=4)
    draw = {
        "loss_curves": lambda: figures.loss_curves(ROWS),
        "gan_curves": lambda: figures.loss_curves(GAN_ROWS),
        "decision_boundary": lambda: figures.decision_boundary(
            lambda p: (p[:, 0] > 0).astype(int) + (p[:, 1] > 1), x2, labels, ["a", "b", "c"]
        ),
        "fitted_curve": lambda: figures.fitted_curve(x1, 2 * x1 - 1 + rng.normal(0, 0.1, 50), 2 * x1 - 1),
        "confusion_matrix": lambda: figures.confusion_matrix(rng.integers(0, 9, (3, 3)), ["a", "b", "c"]),
        "misclassified": lambda: figures.misclassified(
            rng.integers(0, 255, (5, 1, 8, 8), dtype=np.uint8), [0, 1, 2, 0, 1], [1, 2, 0, 2, 0], ["a", "b", "c"]
        ),
        "misclassified_rgb": lambda: figures.misclassified(
            rng.uniform(0, 1, (3, 3, 8, 8)), [0, 1, 2], [1, 2, 0], ["a", "b", "c"]
        ),
        "labelled_grid": lambda: figures.labelled_grid(grid, ["class 0", "class 1", "class 2"], "per class"),
    }[name]
    path = figures.save_png(draw(), tmp_path / "sub" / f"{name}.png")
    image = assert_png(path)
    assert image.size[0] >= 200 and image.size[1] >= 150
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written atomically: no temporary left


def test_loss_curves_pair_train_with_val_and_put_every_loss_first():
    axes = figures.loss_curves(ROWS).axes
    assert [ax.get_title() for ax in axes] == ["loss", "acc", "learning rate"]  # no panel for the per-step loss
    assert [line.get_label() for line in axes[0].get_lines()] == ["train/loss", "val/loss"]
    gan = figures.loss_curves(GAN_ROWS).axes
    assert [ax.get_title() for ax in gan] == ["loss", "fid", "learning rate"]
    assert [line.get_label() for line in gan[0].get_lines()] == ["train/d_loss", "train/g_loss"]
    assert [line.get_label() for line in gan[2].get_lines()] == ["lr-Adam", "lr-Adam-1"]  # both optimizers


def test_confusion_matrix_annotates_counts_up_to_20_classes():
    small = figures.confusion_matrix(np.arange(9).reshape(3, 3), ["a", "b", "c"]).axes[0]
    assert sorted(int(t.get_text()) for t in small.texts) == list(range(9))
    large = figures.confusion_matrix(np.ones((21, 21)), [str(i) for i in range(21)]).axes[0]
    assert len(large.texts) == 0
    with pytest.raises(ValueError, match=r"shape \(3, 3\) does not match 2 class names"):
        figures.confusion_matrix(np.ones((3, 3)), ["a", "b"])


def test_misclassified_titles_say_true_then_predicted():
    figure = figures.misclassified(np.zeros((2, 1, 4, 4), np.uint8), [3, 1], [8, 7], [str(i) for i in range(10)])
    assert [text.get_text() for text in figure.axes[0].texts] == ["3→8", "1→7"]


def test_gif_has_every_frame(tmp_path):
    frames = [figures.image_grid(torch.full((4, 1, 8, 8), v), nrow=2) for v in (0.0, 0.5, 1.0)]
    with Image.open(figures.save_gif(frames, tmp_path / "a.gif")) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
    with pytest.raises(ValueError, match="at least 2 frames, got 1"):
        figures.save_gif(frames[:1], tmp_path / "b.gif")


# --- the callbacks in training runs -------------------------------------------------------------------


def test_spirals_classifier_logs_loss_curves_boundary_and_confusion(processed, in_tmp, mlflow_store):
    train(make_cfg(processed, in_tmp, "experiment=spirals_mlp", "logger=mlflow", "trainer.max_epochs=3", *FAST))
    logged = mlflow_figures(mlflow_store, in_tmp / "download")
    assert set(logged) == {"loss_curves.png", "decision_boundary.png", "confusion_matrix.png"}
    for path in logged.values():
        assert_png(path)
    assert logged["loss_curves.png"].read_bytes() == (in_tmp / "run" / "figures" / "loss_curves.png").read_bytes()


def test_line_regression_logs_the_fitted_curve(processed, in_tmp, mlflow_store):
    train(make_cfg(processed, in_tmp, "experiment=line_regression", "logger=mlflow", "trainer.max_epochs=3", *FAST))
    logged = mlflow_figures(mlflow_store, in_tmp / "download")
    assert set(logged) == {"loss_curves.png", "fitted_curve.png"}
    assert_png(logged["fitted_curve.png"])


def test_image_classifier_logs_confusion_and_misclassified_images(processed, in_tmp, mlflow_store):
    train(
        make_cfg(
            processed,
            in_tmp,
            "data=mnist",
            "model=tiny_cnn",
            "logger=mlflow",
            "trainer.max_epochs=1",
            "callbacks.misclassified.max_images=5",
            *FAST,
        )
    )
    logged = mlflow_figures(mlflow_store, in_tmp / "download")
    assert set(logged) == {"loss_curves.png", "confusion_matrix.png", "misclassified.png"}
    for path in logged.values():
        assert_png(path)


def test_gan_logs_step_grids_animation_and_final_grids(processed, in_tmp, mlflow_store):
    cfg = make_cfg(
        processed,
        in_tmp,
        "experiment=mnist_cgan",
        "logger=mlflow",
        "model.scorer_checkpoint=null",
        "callbacks.model_checkpoint.monitor=null",
        "data.datamodule.batch_size=16",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=5",
        "+trainer.limit_val_batches=0",
        "test=false",
        "callbacks.gan_progress.every_n_steps=2",
        *FAST,
    )
    train(cfg)
    logged = mlflow_figures(mlflow_store, in_tmp / "download")
    assert set(logged) == {"loss_curves.png", "samples_final.png", "samples_per_class.png", "samples.gif"}
    steps = mlflow_figures(mlflow_store, in_tmp / "download", "figures/samples")
    assert set(steps) == {"step_000002.png", "step_000004.png", "step_000005.png"}  # every 2 batches, and the last
    final = assert_png(logged["samples_final.png"])
    assert final.size == (10 * 18 + 2, 10 * 18 + 2)  # 16-pixel digits, 2-pixel padding: one row per class
    assert logged["samples_final.png"].read_bytes() == steps["step_000005.png"].read_bytes()
    assert_png(logged["samples_per_class.png"])
    with Image.open(logged["samples.gif"]) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3

    # The run's other artifacts: a model summary with layer sizes, and the generator as an MLflow model
    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("mnist_cgan").experiment_id])
    summary = Path(client.download_artifacts(run.info.run_id, "model_summary.txt", str(in_tmp))).read_text()
    assert "Out sizes" in summary and "[2, 1, 16, 16]" in summary
    generator = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    noise_and_class = np.zeros((3, cfg.model.latent_dim + 1), dtype=np.float32)
    noise_and_class[:, -1] = [0, 3, 9]  # the digits asked for
    images = generator.predict(noise_and_class)
    assert images.shape == (3, 1, 16, 16) and images.min() >= 0 and images.max() <= 1
    assert not np.allclose(images[0], images[2]), "the class column changes what is drawn"


def test_without_mlflow_the_figures_land_in_the_run_folder(processed, in_tmp, mlflow_store):
    train(make_cfg(processed, in_tmp, "experiment=spirals_mlp", "logger=csv", "trainer.max_epochs=2", *FAST))
    folder = in_tmp / "run" / "figures"
    assert {p.name for p in folder.iterdir()} == {"loss_curves.png", "decision_boundary.png", "confusion_matrix.png"}
    for path in folder.iterdir():
        assert_png(path)
    client = MlflowClient(mlflow_store)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def compose_without_callbacks(processed: Path, tmp_path: Path, *overrides: str) -> DictConfig:
    """``make_cfg`` with ``callbacks=none`` (make_cfg sets the progress bar, which callbacks=none has not)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.processed_dir={processed}", f"paths.log_dir={tmp_path}", "callbacks=none", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig().set_config(cfg)
    return cfg


def test_callbacks_none_or_no_figures_draws_nothing(processed, in_tmp):
    train(compose_without_callbacks(processed, in_tmp, "experiment=spirals_mlp", "logger=csv", "trainer.max_epochs=2"))
    assert (in_tmp / "run").is_dir() and not (in_tmp / "run" / "figures").exists()
    cfg = make_cfg(
        processed, in_tmp / "b", "experiment=spirals_mlp", "callbacks=no_figures", "logger=csv", "trainer.max_epochs=2"
    )
    assert cfg.callbacks.model_checkpoint is not None  # the other callbacks stay
    train(cfg)
    assert (in_tmp / "b" / "run" / "checkpoints").is_dir() and not (in_tmp / "b" / "run" / "figures").exists()


def test_a_figure_that_fails_is_logged_and_the_run_goes_on(processed, in_tmp, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(figures, "decision_boundary", broken)
    with caplog.at_level(logging.WARNING, logger="pipeline.callbacks.figures"):
        metrics = train(
            make_cfg(processed, in_tmp, "experiment=spirals_mlp", "logger=csv", "trainer.max_epochs=1", *FAST)
        )
    assert "test/acc" in metrics
    assert {p.name for p in (in_tmp / "run" / "figures").iterdir()} == {"loss_curves.png", "confusion_matrix.png"}
    assert "DecisionBoundary.on_train_end failed" in caplog.text and "no ink" in caplog.text
