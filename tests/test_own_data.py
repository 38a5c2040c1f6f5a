"""A user's own data, declared through config alone, run as a user runs it (fetch, preprocess, train, evaluate,
predict as processes):

- UCI's Auto MPG exactly as published (no header, aligned columns, '?' for unknowns, a quoted car
  name, a categorical origin): the MLP beats a scikit-learn linear model on the same split, and
  raw rows of the original file, text and all, predict as their preprocessed rows do;
- 1,500 PNG digits in class folders (from the real MNIST files): a LeNet reaches 85 % test accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from pipeline.data.idx import read_idx
from pipeline.data.processed import load_split, read_meta
from pipeline.tracking.loading import load_trained_model
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("own_data")]  # one Auto MPG run serves two tests

AUTO_MPG = REPO_ROOT / "tests/data/auto_mpg/auto-mpg.data"
COLUMNS = ["mpg", "cylinders", "displacement", "horsepower", "weight", "acceleration", "model_year", "origin"]
COLUMNS += ["car_name"]


def _run(*args: str) -> str:
    """``python -m <args>`` from the project root, one torch thread, as a user runs it; fails with its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def _prepare(root: Path, *data: str, mirror: str | None = None) -> dict[str, str]:
    """Fetch and preprocess a dataset into ``root``; the path overrides every later command takes."""
    paths = {"paths.raw_dir": str(root / "raw"), "paths.processed_dir": str(root / "processed")}
    overrides = [f"{k}={v}" for k, v in paths.items()]
    _run("pipeline.fetch", *data, *overrides, *([f"mirror={mirror}"] if mirror else []))
    _run("pipeline.preprocess", *data, *overrides)
    return paths


def _train_and_evaluate(root: Path, paths: dict[str, str], *overrides: str) -> dict[str, float]:
    """Train (CSV logger), then evaluate the checkpoint; the evaluation's test metrics."""
    common = [f"{k}={v}" for k, v in paths.items()] + [f"paths.log_dir={root / 'logs'}"]
    _run(
        "pipeline.train",
        *overrides,
        *common,
        "logger=csv",
        "callbacks=no_figures",
        "callbacks.progress_bar.refresh_rate=0",
        f"model_file={root / 'model.ckpt'}",
    )
    _run("pipeline.evaluate", f"ckpt_path={root / 'model.ckpt'}", *common, f"metrics_file={root / 'metrics.json'}")
    return json.loads((root / "metrics.json").read_text())


@pytest.fixture(scope="session")  # session: xdist may tear a module's fixtures down between its tests
def auto_mpg(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("auto_mpg")
    paths = _prepare(root, "data=auto_mpg", mirror=str(REPO_ROOT / "tests/data"))
    metrics = _train_and_evaluate(root, paths, "experiment=auto_mpg_mlp", "trainer.max_epochs=60")
    (root / "test_metrics.json").write_text(json.dumps(metrics))
    return root


def test_auto_mpg_mlp_beats_a_linear_model_on_the_same_split(auto_mpg):
    processed = auto_mpg / "processed/auto_mpg"
    meta = read_meta(processed)
    assert meta["rows_read"] == 398 and meta["rows_dropped"] == 6  # the six '?' horsepowers
    assert meta["feature_names"][-3:] == ["origin=1", "origin=2", "origin=3"]
    (x, y), (test_x, test_y) = load_split(processed, "train"), load_split(processed, "test")
    linear = r2_score(test_y, LinearRegression().fit(x, y).predict(test_x))
    model = load_trained_model(str(auto_mpg / "model.ckpt"))
    mlp = r2_score(test_y, model.predict(test_x)[:, 0])  # independent of the pipeline's metrics
    reported = json.loads((auto_mpg / "test_metrics.json").read_text())
    assert reported["test/r2"] == pytest.approx(mlp, abs=1e-4)
    # the MLP learnt the standardised mpg, yet its logged loss is in mpg² like its MSE
    assert reported["test/loss"] == pytest.approx(reported["test/mse"], rel=1e-4)
    assert reported["test/mse"] == pytest.approx(float(np.mean((model.predict(test_x)[:, 0] - test_y) ** 2)), rel=1e-4)
    assert mlp >= linear, f"MLP R² {mlp:.3f} below the linear model's {linear:.3f}"


def _encode_by_hand(rows: pd.DataFrame) -> np.ndarray:
    """The features of Auto MPG rows, computed without the pipeline: six numbers, then origin one-hot."""
    numbers = rows[COLUMNS[1:7]].astype(float).to_numpy()
    return np.hstack([numbers, np.eye(3)[rows["origin"].astype(int).to_numpy() - 1]])


def test_raw_rows_of_the_original_file_predict_as_their_preprocessed_rows(auto_mpg):
    lines = [line for line in AUTO_MPG.read_text().splitlines() if "?" not in line]
    new_cars = auto_mpg / "new_cars.data"  # the original rows verbatim: aligned, tab, quoted names, no header
    new_cars.write_text("\n".join(lines) + "\n")
    out = auto_mpg / "predictions.csv"
    _run("pipeline.predict", f"model_uri={auto_mpg / 'model.ckpt'}", f"input={new_cars}", f"output={out}")
    predicted = pd.read_csv(out)
    rows = pd.read_csv(new_cars, sep=r"\s+", header=None, names=COLUMNS, dtype=str)
    assert predicted["car_name"].tolist() == rows["car_name"].tolist()  # other columns are carried through
    by_hand = _encode_by_hand(rows)
    processed = np.concatenate([load_split(auto_mpg / "processed/auto_mpg", s)[0] for s in ("train", "val", "test")])
    # the same rows, encoded by hand and by the preprocess stage (row order differs: compare sorted)
    np.testing.assert_allclose(np.unique(by_hand, axis=0), np.unique(processed, axis=0), rtol=1e-6)
    model = load_trained_model(str(auto_mpg / "model.ckpt"))
    expected = model.predict(by_hand.astype(np.float32))[:, 0]
    np.testing.assert_allclose(predicted["prediction"], expected, rtol=1e-5)


def _write_digit_folder(mirror: Path, dest: Path, per_class: int = 150) -> None:
    """``dest/<digit>/<n>.png``: the first ``per_class`` training images of each digit of the real MNIST files."""
    images = read_idx(mirror / "mnist/train-images-idx3-ubyte.gz", ndim=3)
    labels = read_idx(mirror / "mnist/train-labels-idx1-ubyte.gz", ndim=1)
    for digit in range(10):
        (dest / str(digit)).mkdir(parents=True)
        for n, index in enumerate(np.flatnonzero(labels == digit)[:per_class]):
            Image.fromarray(images[index]).save(dest / str(digit) / f"{n:04d}.png")


def test_a_lenet_learns_1500_png_digits_declared_through_config(real_mirror, tmp_path):
    _write_digit_folder(real_mirror, tmp_path / "digits")
    data = ["data=my_images", "data.name=digits", f"data.source.path={tmp_path / 'digits'}"]
    data += ["data.source.image_size=[28,28]", "data.source.channels=1"]
    paths = _prepare(tmp_path, *data)
    meta = read_meta(tmp_path / "processed/digits")
    assert sum(meta["splits"][s]["n"] for s in ("train", "val", "test")) == 1500
    assert sorted(meta["class_counts"]["test"]) == [22] * 5 + [23] * 5  # 225 test images, stratified
    metrics = _train_and_evaluate(tmp_path, paths, *data, "model=lenet", "trainer.max_epochs=12")
    test_x, test_y = load_split(tmp_path / "processed/digits", "test")
    model = load_trained_model(str(tmp_path / "model.ckpt"))
    accuracy = float((model.predict(test_x.astype(np.float32)).argmax(axis=1) == test_y).mean())
    assert metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert accuracy >= 0.85, f"LeNet reached {accuracy:.3f} on the digit folder's test split"
