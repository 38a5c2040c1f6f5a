"""Figures of a run as matplotlib ``Figure`` objects: pure functions of arrays, no training state.

Drawn on ``matplotlib.figure.Figure`` (the Agg canvas), never through ``pyplot``: pyplot keeps
every figure in a global registry until closed, which leaks memory in a long training process
and is not thread-safe. Only ``pipeline.callbacks.figures`` imports this module.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.typing import ColorType
from PIL import Image
from torchvision.utils import make_grid

from pipeline.atomic import atomic_open

DPI = 100
MAX_ANNOTATED_CLASSES = 20  # more classes than this: the confusion matrix's cells get no counts
GRID_POINTS = 200  # decision boundary: points per axis of the evaluated grid


def save_png(figure: Figure, dest: str | Path) -> Path:
    """Write ``figure`` as a PNG atomically, so a viewer or an artifact upload never sees half a file."""
    with atomic_open(dest, "wb") as fh:
        figure.savefig(fh, format="png", dpi=DPI)
    return Path(dest)


def loss_curves(rows: Sequence[Mapping[str, float]]) -> Figure:
    """Every per-epoch metric, train beside val: over- and under-fitting show at a glance.

    One panel per metric (``train/acc`` with ``val/acc``); every ``*loss`` (the GAN's
    ``d_loss`` and ``g_loss`` too) shares the first panel, the learning rate comes last.
    """
    names = {k for row in rows for k in row} - {"epoch", "step"}
    panels: dict[str, list[str]] = {}
    for name in sorted(names):
        if name.endswith("_step") and name.removesuffix("_step") in names:
            continue  # the last batch's value of a metric whose epoch mean is plotted: noise
        metric = name.split("/", 1)[-1]
        panel = "loss" if metric.endswith("loss") else "learning rate" if name.startswith("lr-") else metric
        panels.setdefault(panel, []).append(name)
    order = sorted(panels, key=lambda p: (p != "loss", p == "learning rate", p))
    cols = max(1, min(3, len(order)))
    grid_rows = max(1, -(-len(order) // cols))
    figure = Figure(figsize=(4.5 * cols, 3.2 * grid_rows), layout="constrained")
    epochs = np.array([row.get("epoch", i) for i, row in enumerate(rows)], dtype=float)
    for index, panel in enumerate(order):
        ax = figure.add_subplot(grid_rows, cols, index + 1)
        for name in panels[panel]:
            values = np.array([row.get(name, np.nan) for row in rows], dtype=float)
            ax.plot(epochs, values, marker="o" if len(rows) < 30 else None, markersize=3, label=name)
        ax.set(title=panel, xlabel="epoch")
        ax.legend(fontsize="small")
    return figure


def decision_boundary(
    predict_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, class_names: Sequence[str]
) -> Figure:
    """The regions a 2-D classifier assigns to each class, under the points: shows what features it learned."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    margin = 0.1 * (hi - lo) + 1e-6
    xs, ys = (np.linspace(lo[i] - margin[i], hi[i] + margin[i], GRID_POINTS) for i in range(2))
    gx, gy = np.meshgrid(xs, ys)
    regions = predict_fn(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)).reshape(gx.shape)
    k = len(class_names)
    palette = colormaps["tab10" if k <= 10 else "tab20"]
    assert isinstance(palette, ListedColormap)  # both are lists of colours
    colours = ListedColormap(cast(Sequence[ColorType], palette.colors)[:k])  # typed as any array or colour
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.add_subplot()
    ax.contourf(gx, gy, regions, levels=np.arange(k + 1) - 0.5, cmap=colours, alpha=0.3)
    scatter = ax.scatter(
        x[:, 0], x[:, 1], c=y, cmap=colours, vmin=-0.5, vmax=k - 0.5, s=12, edgecolors="k", linewidths=0.3
    )
    handles = scatter.legend_elements()[0]  # one per class present, in sorted order
    ax.legend(handles, [class_names[int(c)] for c in np.unique(y)], title="class", fontsize="small")
    ax.set(title="decision boundary", xlabel="x0", ylabel="x1")
    return figure


def fitted_curve(x: np.ndarray, y: np.ndarray, predicted: np.ndarray) -> Figure:
    """The data and the model's curve through it, for a 1-D regression: the fit is judged by eye."""
    order = np.argsort(x)
    figure = Figure(figsize=(5.5, 4), layout="constrained")
    ax = figure.add_subplot()
    ax.scatter(x, y, s=10, alpha=0.6, label="data")
    ax.plot(x[order], predicted[order], color="C3", linewidth=2, label="model")
    ax.set(title="fitted curve", xlabel="x", ylabel="y")
    ax.legend()
    return figure


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts of (true, predicted) pairs: which classes the model confuses with which."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not match {k} class names")
    side = min(12.0, 2.5 + 0.45 * k)
    figure = Figure(figsize=(side + 1, side), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=ax, shrink=0.8)
    if k <= MAX_ANNOTATED_CLASSES:
        ticks = np.arange(k)
        ax.set_xticks(ticks, class_names, rotation=45 if max(map(len, class_names)) > 3 else 0)
        ax.set_yticks(ticks, class_names)
        threshold = matrix.max() / 2
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                str(int(count)),
                ha="center",
                va="center",
                fontsize="small",
                color="white" if count > threshold else "black",
            )
    ax.set(title="confusion matrix (test)", xlabel="predicted", ylabel="true")
    return figure


def misclassified(
    images: np.ndarray, true: Sequence[int], predicted: Sequence[int], class_names: Sequence[str], cols: int = 8
) -> Figure:
    """Wrongly classified test images titled true→predicted: what the model gets wrong, and whether a human would.

    The images are tiled into one picture on one axes: 32 small axes take ten times as long to lay out.
    """
    n = len(images)
    if n == 0:
        raise ValueError("misclassified() needs at least one image")
    images = np.asarray(images)
    if images.dtype != np.uint8:  # floats in [0, 1]
        images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    channels, height, width = images.shape[1:]
    cols = min(cols, n)
    rows = -(-n // cols)
    title, pad = max(8, height // 3), max(2, width // 10)  # room above each image for its title; between images
    cell_h, cell_w = height + title, width + pad
    canvas = np.full((rows * cell_h, cols * cell_w, channels), 255, np.uint8)
    figure = Figure(figsize=(max(3.0, 1.2 * cols), 1.4 * rows + 0.4))
    figure.suptitle(f"misclassified test images ({n} shown): true→predicted")
    ax = figure.add_axes((0.01, 0.01, 0.98, 0.98 - 0.4 / (1.4 * rows + 0.4)))
    for index in range(n):
        row, col = divmod(index, cols)
        top, left = row * cell_h + title, col * cell_w + pad // 2
        canvas[top : top + height, left : left + width] = np.moveaxis(images[index], 0, -1)
        ax.text(
            left + width / 2,
            top - 1,
            f"{class_names[true[index]]}→{class_names[predicted[index]]}",
            ha="center",
            va="bottom",
            fontsize="small",
        )
    ax.imshow(
        canvas[..., 0] if channels == 1 else canvas,
        cmap="gray" if channels == 1 else None,
        vmin=0,
        vmax=255,
        interpolation="nearest",
    )
    ax.set_axis_off()
    return figure


def image_grid(images: torch.Tensor, nrow: int) -> Image.Image:
    """Images in [0, 1] (N×C×H×W) tiled ``nrow`` to a row, as torchvision's ``save_image`` tiles them.

    A plain PIL image, not a matplotlib figure: GAN frames are written every few hundred
    steps, and tiling pixels is a hundred times cheaper than drawing a figure.
    """
    grid = make_grid(images, nrow=nrow, padding=2)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    return Image.fromarray(pixels)


def labelled_grid(grid: Image.Image, row_labels: Sequence[str], title: str) -> Figure:
    """A sample grid with a label beside each row (the class or code the row was drawn for)."""
    width, height = grid.size
    rows = len(row_labels)
    figure = Figure(figsize=(max(4.0, 1.2 + width / 40), max(3.0, 0.6 + height / 40)), layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(np.asarray(grid), interpolation="nearest")
    ax.set_yticks((np.arange(rows) + 0.5) * height / rows, row_labels)
    ax.set_xticks([])
    ax.set_title(title)
    return figure


def save_image(image: Image.Image, dest: str | Path) -> Path:
    """Write a PIL image as a PNG atomically."""
    with atomic_open(dest, "wb") as fh:
        image.save(fh, format="png")
    return Path(dest)


def save_gif(frames: Sequence[Image.Image], dest: str | Path, frame_ms: int = 300, last_ms: int = 2000) -> Path:
    """The frames as a looping animated GIF (the last one held longer): training progress in one file."""
    if len(frames) < 2:
        raise ValueError(f"an animation needs at least 2 frames, got {len(frames)}")
    buffer = io.BytesIO()
    durations = [frame_ms] * (len(frames) - 1) + [last_ms]
    frames[0].save(buffer, format="gif", save_all=True, append_images=list(frames[1:]), duration=durations, loop=0)
    with atomic_open(dest, "wb") as fh:
        fh.write(buffer.getvalue())
    return Path(dest)


def answered_questions(questions: Sequence[str], true: Sequence[str], predicted: Sequence[str]) -> Figure:
    """A table of test questions with the model's answer and the true one, each marked right (green ✓) or
    wrong (red ✗): what a sequence model gets wrong is seen at a glance."""
    rows = len(questions)
    figure = Figure(figsize=(5.0, 0.6 + 0.28 * rows), layout="constrained")
    ax = figure.add_subplot()
    ax.axis("off")
    ax.set_title(f"test questions: {sum(p == t for p, t in zip(predicted, true, strict=True))} of {rows} right")
    for row, (question, answer, guess) in enumerate(zip(questions, true, predicted, strict=True)):
        right = guess == answer
        y = 1 - (row + 0.5) / rows
        ax.text(0.0, y, f"{question} =", family="monospace", ha="left", va="center")
        ax.text(0.45, y, guess, family="monospace", ha="left", va="center", color="green" if right else "red")
        ax.text(0.7, y, "✓" if right else f"✗ ({answer})", ha="left", va="center", color="green" if right else "red")
    return figure


def reward_curve(rewards: Sequence[float], window: int, solved: float | None) -> Figure:
    """Each training episode's return, its moving average over ``window`` episodes, and the environment's
    "solved" line: how far the agent is from solving it, and how steadily it learns."""
    figure = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = figure.add_subplot()
    episodes = np.arange(1, len(rewards) + 1)
    values = np.asarray(rewards, dtype=float)
    ax.plot(episodes, values, color="tab:blue", alpha=0.35, linewidth=0.8, label="episode reward")
    average = np.convolve(values, np.ones(window), "full")[: len(values)] / np.minimum(episodes, window)
    ax.plot(episodes, average, color="tab:blue", linewidth=2, label=f"moving average ({window} episodes)")
    if solved is not None:
        ax.axhline(solved, color="tab:green", linestyle="--", label=f"solved ({solved:g})")
    ax.set_xlabel("training episode")
    ax.set_ylabel("reward")
    ax.set_title("training episodes")
    top = max(float(values.max(initial=0.0)), solved or 0.0)
    ax.set_ylim(min(0.0, float(values.min(initial=0.0))), top * 1.35 if top > 0 else 1.0)  # the legend above it all
    ax.legend(loc="upper left")
    return figure
