"""`python -m pipeline.predict`: a registered, logged or checkpointed model on new CSV rows, images and arrays."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.data.spec import DatasetSpec
from pipeline.errors import DataFormatError, ModelConfigError
from pipeline.models.checkpoints import load_module
from pipeline.predict import predict
from pipeline.train import train
from tests.conftest import REPO_ROOT, make_cfg
from tests.servers import free_port, serving

pytestmark = pytest.mark.xdist_group("predict")  # one module-scoped store and two trained models


@pytest.fixture(scope="module")
def models(processed, tmp_path_factory, migrated_mlflow_db) -> dict[str, str]:
    """A spirals classifier registered as ``spirals`` and a digit CNN registered as ``digits``, in a store of
    their own; their checkpoints too."""
    root = tmp_path_factory.mktemp("predict")
    shutil.copyfile(migrated_mlflow_db, root / "mlflow.db")
    store = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        checkpoints = {}
        for name, overrides in {
            "spirals": ["experiment=spirals_mlp", "trainer.max_epochs=3"],
            "digits": ["data=mnist", "model=tiny_cnn", "trainer.max_epochs=1", "task_name=digits"],
        }.items():
            cfg = make_cfg(
                processed,
                root / name,
                *overrides,
                "logger=mlflow",
                f"logger.mlflow.registered_model_name={name}",
                "callbacks=no_figures",
                f"model_file={root / name / 'model.ckpt'}",
            )
            train(cfg)
            checkpoints[name] = str(root / name / "model.ckpt")
    return {"store": store, **{f"{k}_ckpt": v for k, v in checkpoints.items()}}


def run_predict(models: dict[str, str], model_uri: str, source: Path, output: Path) -> pd.DataFrame:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "predict",
            [f"model_uri={model_uri}", f"input={source}", f"output={output}", f"tracking_uri={models['store']}"],
        )
    predict(cfg)
    return pd.read_csv(output, dtype={"prediction": str})


def reference(checkpoint: str, x: np.ndarray) -> np.ndarray:
    """Class probabilities computed the long way: the checkpoint's module on inputs normalised by hand."""
    module, record = load_module(checkpoint)
    spec = DatasetSpec.from_record(record["data"])
    shape = (1, -1) + (1,) * (len(spec.input_shape) - 1)
    scaled = torch.from_numpy(x).float() / spec.pixel_scale
    inputs = (scaled - torch.tensor(spec.mean).reshape(shape)) / torch.tensor(spec.std).reshape(shape)
    with torch.no_grad():
        logits = module.net(inputs)
    if logits.shape[1] == 1:  # a binary classifier's one logit: the positive class
        positive = logits.sigmoid()
        return torch.cat([1 - positive, positive], dim=1).numpy()
    return logits.softmax(dim=1).numpy()


def test_csv_rows_by_column_name_with_their_other_columns(models, processed, tmp_path):
    x = np.load(processed / "spirals" / "test_x.npy")[:7].astype(np.float32)
    table = pd.DataFrame({"id": [f"p{i}" for i in range(7)], "x2": x[:, 1], "note": "n", "x1": x[:, 0]})
    table.to_csv(tmp_path / "points.csv", index=False)
    out = run_predict(models, "models:/spirals@champion", tmp_path / "points.csv", tmp_path / "out.csv")
    assert list(out.columns) == ["id", "note", "prediction", "probability"]
    assert list(out["id"]) == list(table["id"])
    expected = reference(models["spirals_ckpt"], x)  # columns reordered: read by name
    assert list(out["prediction"]) == [str(c) for c in expected.argmax(axis=1)]
    np.testing.assert_allclose(out["probability"], expected.max(axis=1), rtol=1e-5)


def test_a_folder_of_png_files_is_read_as_the_training_images(models, processed, tmp_path):
    pixels = np.load(processed / "mnist" / "test_x.npy")[:5]  # (5, 1, 16, 16) uint8
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image[0]).save(folder / f"digit_{i}.png")
    Image.fromarray(np.repeat(pixels[0, 0, :, :, None], 3, axis=2)).resize((32, 32)).save(folder / "big_rgb.png")
    out = run_predict(models, "models:/digits@champion", folder, tmp_path / "out.csv")
    assert list(out["file"]) == ["big_rgb.png", *(f"digit_{i}.png" for i in range(5))]
    expected = reference(models["digits_ckpt"], pixels.astype(np.float32))
    np.testing.assert_allclose(out["probability"][1:], expected.max(axis=1), rtol=1e-4)
    assert list(out["prediction"][1:]) == [str(c) for c in expected.argmax(axis=1)]


def test_the_command_line_with_a_checkpoint_and_an_array(models, processed, tmp_path):
    x = np.load(processed / "mnist" / "test_x.npy")[:3, 0]  # (n, H, W): the channel axis left out
    np.save(tmp_path / "batch.npy", x)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.predict",
            f"model_uri={models['digits_ckpt']}",
            f"input={tmp_path / 'batch.npy'}",
            f"output={tmp_path / 'out.csv'}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = pd.read_csv(tmp_path / "out.csv", dtype={"prediction": str})
    expected = reference(models["digits_ckpt"], x[:, None].astype(np.float32))
    assert list(out["row"]) == [0, 1, 2]
    np.testing.assert_allclose(out["probability"], expected.max(axis=1), rtol=1e-4)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("x1,id\n0.5,a\n", "missing feature column(s) x2; the model takes x1, x2"),
        ("x1,x2\n0.5,1\n0.2,abc\n", "line 3, column 'x2': 'abc' is not a number"),
        ("", "the file is empty"),
        ("x1,x2\n", "has a header (x1, x2) but no data rows"),
    ],
)
def test_a_bad_table_names_the_file_and_the_problem(models, tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataFormatError, match=r"bad\.csv") as error:
        run_predict(models, models["spirals_ckpt"], tmp_path / "bad.csv", tmp_path / "out.csv")
    assert message in str(error.value)
    assert not (tmp_path / "out.csv").exists()


def test_a_tab_separated_file_with_spaced_names_is_read_like_the_training_table(models, tmp_path):
    (tmp_path / "points.tsv").write_text(" x1 \t x2 \n0.5\t-1.2\n")
    out = run_predict(models, models["spirals_ckpt"], tmp_path / "points.tsv", tmp_path / "out.csv")
    expected = reference(models["spirals_ckpt"], np.array([[0.5, -1.2]], dtype=np.float32))
    np.testing.assert_allclose(out["probability"], expected.max(axis=1), rtol=1e-5)


def test_bad_images_arrays_and_models_are_refused(models, processed, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match=r"broken\.png: not an image Pillow can read"):
        run_predict(models, models["digits_ckpt"], tmp_path / "images", tmp_path / "out.csv")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(DataFormatError, match=r"wrong\.npy: an array of shape \(2, 3\).*\(n, 1, 16, 16\)"):
        run_predict(models, models["digits_ckpt"], tmp_path / "wrong.npy", tmp_path / "out.csv")
    with pytest.raises(DataFormatError, match="a CSV feeds a model trained on a table"):
        (tmp_path / "t.csv").write_text("a\n1\n")
        run_predict(models, models["digits_ckpt"], tmp_path / "t.csv", tmp_path / "out.csv")
    with pytest.raises(ModelConfigError, match=r"models:/nobody@champion: .*not found"):
        run_predict(models, "models:/nobody@champion", tmp_path / "t.csv", tmp_path / "out.csv")


def test_a_gan_checkpoint_is_refused(processed, tmp_path):
    overrides = ["experiment=mnist_gan", "model.scorer_checkpoint=null", "debug=fast_dev_run", "callbacks=no_figures"]
    train(make_cfg(processed, tmp_path, *overrides, f"model_file={tmp_path / 'gan.ckpt'}"))
    with pytest.raises(ModelConfigError, match=r"gan\.ckpt is a GAN checkpoint"):
        run_predict({"store": "sqlite:///unused.db"}, str(tmp_path / "gan.ckpt"), tmp_path, tmp_path / "out.csv")


def test_the_registered_versions_carry_the_run_and_its_test_metrics(models):
    client = MlflowClient(models["store"])
    version = client.get_model_version_by_alias("spirals", "champion")
    run = client.get_run(version.run_id)
    assert version.tags["data.name"] == "spirals" and version.tags["git.commit"] == run.data.tags["git.commit"]
    assert float(version.tags["test/acc"]) == pytest.approx(run.data.metrics["test/acc"])
    assert float(version.tags["val/acc"]) == pytest.approx(run.data.metrics["val/acc"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spirals", "digits"])
def test_mlflow_serves_the_champion_over_http(models, processed, tmp_path, name):
    """`mlflow models serve -m models:/<name>@champion --env-manager local`, asked over loopback HTTP with raw
    features or pixel values 0-255, answers what the checkpoint computes."""
    x = np.load(processed / ("spirals" if name == "spirals" else "mnist") / "test_x.npy")[:4].astype(np.float32)
    if name == "spirals":
        x[0] = [0.5, -1.2]  # the example row
    port = free_port()
    bin_dir = Path(sys.executable).parent  # mlflow runs uvicorn from PATH
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": models["store"], "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with serving(
        [*command, "-h", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}", tmp_path, env, "/ping"
    ) as url:
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = np.asarray(json.loads(response.read())["predictions"])
    expected = reference(models[f"{name}_ckpt"], x)
    if name == "spirals":  # the logged binary model returns the positive class's probability
        expected = expected[:, 1:]
    np.testing.assert_allclose(predictions, expected, rtol=1e-4, atol=1e-6)
