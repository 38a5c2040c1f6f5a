"""Figures of a run, drawn by Lightning callbacks (the modules only train): ``conf/callbacks/figures.yaml``.

Every callback decides for itself whether it applies (by the module's family and the
datamodule's task and input shape), so one config serves every experiment. Figures go to
``<run folder>/figures/`` (``trainer.default_root_dir``, beside ``checkpoints/`` and
``history.csv``) and, through every logger that takes files (``log_file``: the MLflow logger of
``pipeline.tracking.logger``), to the tracked run's ``figures/`` artifacts. Only global rank zero
draws. Nothing is drawn per batch: figures at fit or test end, GAN frames every ``every_n_steps``
batches.

A figure hook that fails is logged as a warning with its traceback and its figure skipped: a
plotting problem must not throw away the hours of training before it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure
from PIL import Image

from pipeline.callbacks import drawing
from pipeline.callbacks.history import EpochRows

log = logging.getLogger(__name__)

ARTIFACT_DIR = "figures"
PREDICT_BATCH = 8192  # grid points or test images per forward pass when a callback predicts

Hook = Callable[..., None]


class _Classifier(Protocol):
    """What the figures use of a module whose ``family`` is classification (``ClassificationModule``)."""

    num_classes: int

    def classify(self, x: torch.Tensor) -> torch.Tensor: ...


class _SampleGrid(Protocol):
    """What ``GANProgress`` uses of a module with ``sample_grid()`` (``GANModule``)."""

    num_classes: int

    def sample_grid(self) -> torch.Tensor: ...


def guarded(hook: Hook) -> Hook:
    """A figure hook whose failure is logged, not raised (see the module docstring)."""

    @functools.wraps(hook)
    def run(self: Callback, *args: Any, **kwargs: Any) -> None:
        try:
            hook(self, *args, **kwargs)
        except Exception:
            log.warning("%s.%s failed: its figure is skipped", type(self).__name__, hook.__name__, exc_info=True)

    return run


class FigureCallback(Callback):
    """Where figures are written (``dirpath``, default ``<trainer.default_root_dir>/figures``) and logged."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def applies(self, pl_module: L.LightningModule, input_shape: tuple[int, ...] | None) -> bool:
        """Whether this figure can be drawn for this model on inputs of this shape (None: unknown). Training
        leaves out the figures that cannot: Lightning calls every hook of every callback at every step."""
        return True

    def figures_dir(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / ARTIFACT_DIR

    def publish(self, trainer: L.Trainer, name: str, draw: Callable[[Path], Any], subdir: str = "") -> Path | None:
        """Write ``figures/<subdir>/<name>`` with ``draw(path)`` and log it to MLflow; on rank zero only."""
        if not trainer.is_global_zero:
            return None
        path = self.figures_dir(trainer) / subdir / name
        draw(path)
        for logger in trainer.loggers:  # a tracking logger (pipeline.tracking.logger) takes files
            log_file = getattr(logger, "log_file", None)
            if callable(log_file):
                log_file(path, f"{ARTIFACT_DIR}/{subdir}".rstrip("/"))
        return path

    def publish_figure(self, trainer: L.Trainer, name: str, make: Callable[[], Figure]) -> Path | None:
        """``publish`` for a matplotlib figure built by ``make()`` (built only on rank zero)."""
        return self.publish(trainer, name, lambda path: drawing.save_png(make(), path))


# --- helpers: the datamodule's raw data, and predictions of the module on it ---------------------------


def _datamodule(trainer: L.Trainer) -> Any | None:
    """The trainer's ``ArrayDataModule`` (anything with its ``splits``, ``spec`` and ``model_input``)."""
    datamodule = getattr(trainer, "datamodule", None)
    return datamodule if hasattr(datamodule, "splits") and hasattr(datamodule, "spec") else None


def _input_shape(trainer: L.Trainer) -> tuple[int, ...] | None:
    datamodule = _datamodule(trainer)
    return datamodule.spec.input_shape if datamodule is not None else None


def _class_names(datamodule: Any, k: int) -> list[str]:
    names = list(datamodule.spec.class_names) if datamodule is not None else []
    return names if len(names) == k else [str(i) for i in range(k)]


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode (batch norm statistics, no dropout) for the block, then back to the module's mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _predict(
    pl_module: L.LightningModule, datamodule: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``fn`` of raw inputs ``x``, made model inputs on the module's device as training batches are (the
    datamodule's ``ModelInput``, without augmentation), batch by batch."""
    outputs = []
    with _eval_mode(pl_module), torch.no_grad():
        for chunk in x.split(PREDICT_BATCH):
            outputs.append(fn(datamodule.model_input(chunk.to(pl_module.device))).cpu())
    return torch.cat(outputs)


# --- the callbacks ----------------------------------------------------------------------------------------


class LossCurves(EpochRows, FigureCallback):
    """``loss_curves.png`` at fit end: every per-epoch train/val metric (GANs: d_loss, g_loss, val/fid)."""

    def __init__(self, dirpath: str | None = None) -> None:
        EpochRows.__init__(self)
        FigureCallback.__init__(self, dirpath)

    @guarded
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rows:
            self.publish_figure(trainer, "loss_curves.png", lambda: drawing.loss_curves(self.rows))


class _ModelOnData(FigureCallback):
    """A figure of the model over its training points, drawn at fit end and again after testing, so the
    file shows the tested weights (the best checkpoint) when the run tests, the final weights otherwise."""

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    @guarded
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer, pl_module)

    @guarded
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer, pl_module)


class DecisionBoundary(_ModelOnData):
    """``decision_boundary.png`` of a classifier on 2-D data: its class regions under the training points."""

    def applies(self, pl_module: L.LightningModule, input_shape: tuple[int, ...] | None) -> bool:
        return getattr(pl_module, "family", None) == "classification" and input_shape == (2,)

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.applies(pl_module, _input_shape(trainer)):
            return
        datamodule, classifier = _datamodule(trainer), cast(_Classifier, pl_module)
        assert datamodule is not None  # _input_shape found it
        x, y = datamodule.splits["train"].tensors
        names = _class_names(datamodule, classifier.num_classes)

        def predict(points: np.ndarray) -> np.ndarray:
            return _predict(pl_module, datamodule, torch.from_numpy(points), classifier.classify).numpy()

        self.publish_figure(
            trainer, "decision_boundary.png", lambda: drawing.decision_boundary(predict, x.numpy(), y.numpy(), names)
        )


class FittedCurve(_ModelOnData):
    """``fitted_curve.png`` of a regression on 1-D data: the training points and the model's curve through them."""

    def applies(self, pl_module: L.LightningModule, input_shape: tuple[int, ...] | None) -> bool:
        return getattr(pl_module, "family", None) == "regression" and input_shape == (1,)

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.applies(pl_module, _input_shape(trainer)):
            return
        datamodule = _datamodule(trainer)
        assert datamodule is not None  # _input_shape found it
        x, y = datamodule.splits["train"].tensors

        def make() -> Figure:
            predicted = _predict(pl_module, datamodule, x, lambda inputs: pl_module(inputs)[:, 0])
            return drawing.fitted_curve(x[:, 0].numpy(), y.numpy(), predicted.numpy())

        self.publish_figure(trainer, "fitted_curve.png", make)


class ConfusionMatrix(FigureCallback):
    """``confusion_matrix.png`` at test end, from the matrix the classification module accumulated."""

    def applies(self, pl_module: L.LightningModule, input_shape: tuple[int, ...] | None) -> bool:
        return getattr(pl_module, "family", None) == "classification"

    @guarded
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = getattr(pl_module, "confusion_matrix", None)
        if not self.applies(pl_module, _input_shape(trainer)) or matrix is None:
            return
        names = _class_names(_datamodule(trainer), len(matrix))
        self.publish_figure(trainer, "confusion_matrix.png", lambda: drawing.confusion_matrix(matrix.numpy(), names))


class MisclassifiedExamples(FigureCallback):
    """``misclassified.png`` at test end: up to ``max_images`` wrongly classified test images (images only).

    Predicts the test split again, batch by batch, until it has found ``max_images`` mistakes:
    a fraction of one test pass for a good model.
    """

    def __init__(self, max_images: int = 32, dirpath: str | None = None) -> None:
        super().__init__(dirpath)
        if max_images < 1:
            raise ValueError(f"MisclassifiedExamples.max_images must be at least 1, got {max_images}")
        self.max_images = max_images

    def applies(self, pl_module: L.LightningModule, input_shape: tuple[int, ...] | None) -> bool:
        is_classifier = getattr(pl_module, "family", None) == "classification"
        return is_classifier and input_shape is not None and len(input_shape) == 3

    @guarded
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.applies(pl_module, _input_shape(trainer)) or not trainer.is_global_zero:
            return
        datamodule = _datamodule(trainer)
        wrong = self._mistakes(pl_module, datamodule)
        if wrong is None:
            log.info("no misclassified test images: misclassified.png not drawn")
            return
        names = _class_names(datamodule, cast(_Classifier, pl_module).num_classes)
        self.publish_figure(trainer, "misclassified.png", lambda: drawing.misclassified(*wrong, names))

    def _mistakes(self, pl_module: L.LightningModule, datamodule: Any) -> tuple[np.ndarray, list, list] | None:
        """The first ``max_images`` misclassified test images (raw pixels), their labels and predictions."""
        x, y = datamodule.splits["test"].tensors
        batch = int(getattr(datamodule, "eval_batch_size", PREDICT_BATCH))
        classify = cast(_Classifier, pl_module).classify
        images: list[np.ndarray] = []
        true, predicted = [], []
        for start in range(0, len(x), batch):
            xs, ys = x[start : start + batch], y[start : start + batch]
            guesses = _predict(pl_module, datamodule, xs, classify)
            wrong = (guesses != ys).nonzero()[:, 0][: self.max_images - len(images)]
            images.extend(xs[wrong].numpy())
            true.extend(ys[wrong].tolist())
            predicted.extend(guesses[wrong].tolist())
            if len(images) >= self.max_images:
                break
        return (np.stack(images), true, predicted) if images else None


class AnsweredQuestions(FigureCallback):
    """``answers.png`` at test end: the first ``count`` test questions of a sequence model, its answers and the
    true ones, marked right or wrong."""

    def __init__(self, count: int = 20, dirpath: str | None = None) -> None:
        super().__init__(dirpath)
        if count < 1:
            raise ValueError(f"AnsweredQuestions.count must be at least 1, got {count}")
        self.count = count

    def applies(self, pl_module: L.LightningModule, input_shape: tuple[int, ...] | None) -> bool:
        return getattr(pl_module, "family", None) == "sequence"

    @guarded
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = _datamodule(trainer)
        if not self.applies(pl_module, None) or datamodule is None or not trainer.is_global_zero:
            return
        from pipeline.data.tokens import decode_ids

        x, y = (t[: self.count] for t in datamodule.splits["test"].tensors)
        predicted = _predict(pl_module, datamodule, x, lambda ids: pl_module(ids).argmax(dim=-1))
        reverse = bool(datamodule.meta.get("reverse_question", False))
        questions = decode_ids(x.numpy(), reverse=reverse)
        true, guesses = decode_ids(y.numpy()), decode_ids(predicted.numpy())
        self.publish_figure(trainer, "answers.png", lambda: drawing.answered_questions(questions, true, guesses))


class RewardCurve(FigureCallback):
    """``rewards.png`` at fit end: an agent's training episodes, their moving average, and the environment's
    solved line (``solved``, default its own ``reward_threshold``: 475 for CartPole-v1)."""

    def __init__(self, window: int = 100, solved: float | None = None, dirpath: str | None = None) -> None:
        super().__init__(dirpath)
        if window < 1:
            raise ValueError(f"RewardCurve.window must be at least 1, got {window}")
        self.window, self.solved = window, solved

    def applies(self, pl_module: L.LightningModule, input_shape: tuple[int, ...] | None) -> bool:
        return getattr(pl_module, "family", None) == "dqn"

    @guarded
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rewards = getattr(pl_module, "episode_rewards", None)
        if not self.applies(pl_module, None) or not rewards:
            return
        env = getattr(getattr(trainer, "datamodule", None), "env", None)
        solved = self.solved
        if solved is None:  # the environment's own threshold, when it has one
            solved = getattr(getattr(env, "spec", None), "reward_threshold", None)
        self.publish_figure(trainer, "rewards.png", lambda: drawing.reward_curve(rewards, self.window, solved))


class GANProgress(FigureCallback):
    """The fixed-noise sample grid of a GAN over training (anything with ``sample_grid()``).

    Every ``every_n_steps`` batches (0: only at the end) ``figures/samples/step_XXXXXX.png``; at
    fit end the last step's grid too, ``samples_final.png``, ``samples.gif`` (every grid of this
    fit, in order) and, when the rows are classes (conditional GAN) or InfoGAN codes,
    ``samples_per_class.png`` / ``samples_per_code.png`` with each row labelled. A grid is
    tiled pixels, not a matplotlib figure, so a frame costs one generator pass and a PNG write.
    """

    def __init__(self, every_n_steps: int = 500, dirpath: str | None = None) -> None:
        super().__init__(dirpath)
        if every_n_steps < 0:
            raise ValueError(f"GANProgress.every_n_steps must be 0 (only at the end) or positive, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.frames: list[Image.Image] = []
        self._last_step: int | None = None

    def applies(self, pl_module: L.LightningModule, input_shape: tuple[int, ...] | None = None) -> bool:
        return callable(getattr(pl_module, "sample_grid", None))

    @staticmethod
    def _step(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        return int(getattr(pl_module, "iterations", trainer.global_step))  # GANs: batches, not optimizer steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.frames, self._last_step = [], None

    @guarded
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = self._step(trainer, pl_module)
        if self.every_n_steps and step % self.every_n_steps == 0 and self.applies(pl_module):
            self._frame(trainer, pl_module, step)

    @guarded
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.applies(pl_module) or not trainer.is_global_zero:
            return
        step = self._step(trainer, pl_module)
        if step != self._last_step:
            self._frame(trainer, pl_module, step)
        if not self.frames:
            return
        final = self.frames[-1]
        self.publish(trainer, "samples_final.png", lambda path: drawing.save_image(final, path))
        labels, name = self._row_labels(trainer, pl_module)
        if labels:
            self.publish_figure(
                trainer,
                name,
                lambda: drawing.labelled_grid(
                    final, labels, f"{name.removesuffix('.png').replace('_', ' ')} (step {step})"
                ),
            )
        if len(self.frames) > 1:
            self.publish(trainer, "samples.gif", lambda path: drawing.save_gif(self.frames, path))

    def _frame(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        if not trainer.is_global_zero or step == self._last_step:
            return
        image = drawing.image_grid(
            cast(_SampleGrid, pl_module).sample_grid(), nrow=int(getattr(pl_module.hparams, "grid_cols", 8))
        )
        self.publish(trainer, f"step_{step:06d}.png", lambda path: drawing.save_image(image, path), subdir="samples")
        self.frames.append(image)
        self._last_step = step

    @staticmethod
    def _row_labels(trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[list[str], str]:
        """What each grid row was drawn for, and the labelled grid's file name; no labels for an unconditional GAN."""
        codes = getattr(pl_module, "latent_code", 0)
        if codes:
            return [f"code {i}" for i in range(codes)], "samples_per_code.png"
        if getattr(pl_module, "conditional", False):
            return _class_names(_datamodule(trainer), cast(_SampleGrid, pl_module).num_classes), "samples_per_class.png"
        return [], ""
