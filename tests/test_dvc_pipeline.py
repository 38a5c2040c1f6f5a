"""End to end: `dvc repro` of the data stages in a temporary git repo, on tiny datasets.

The repo gets this project's dvc.yaml, conf/ and src/ (stage deps hash the source files);
only the dataset lists in dvc.yaml's `vars` are swapped for tiny ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import REPO_ROOT, tiny_digits

# slow; and one test process holds the module-scoped repo (make test's --dist loadgroup)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc_pipeline")]

# Tiny datasets and one tiny experiment (compose -> train -> evaluate on iris).
DATASETS = {
    "image_datasets": ["tiny_digits"],
    "generated_datasets": ["line"],
    "bundled_datasets": ["iris"],
    "csv_datasets": ["own"],
    "image_folder_datasets": ["own_images", "zipped_images"],
    "sequence_datasets": [],
    "experiments": {"iris_mlp": {"data": "iris", "needs": "conf/experiment/iris_mlp.yaml"}},
    "agent_experiments": {"cartpole_tiny": {"env": "cartpole"}},
}
EXPERIMENT_STAGES = {"compose@iris_mlp", "train@iris_mlp", "evaluate@iris_mlp"}
AGENT_STAGES = {"compose_agent@cartpole_tiny", "train_agent@cartpole_tiny"}  # no dataset: the real CartPole


def _sh(repo: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _write_image_datasets(repo: Path, mirror: Path) -> None:
    """The two ways to add images: a folder under data/ (data.dvc), and a zip by URL with its sha256 (served by
    the mirror here, as a user offline would)."""
    rng = np.random.default_rng(0)
    for name in ("own_images", "zipped"):
        for label in ("dark", "light"):
            folder = repo / "data" / name / label
            folder.mkdir(parents=True)
            for i in range(10):
                level = 40 if label == "dark" else 210
                pixels = np.clip(level + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    archive = Path(shutil.make_archive(str(mirror / "zipped" / "shapes"), "zip", repo / "data", "zipped"))
    shutil.rmtree(repo / "data" / "zipped")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    base = {"defaults": ["_image_folder", "_self_"], "task": "classification"}
    source = {"image_size": [8, 8], "channels": 1}
    for name, where in (
        ("own_images", {"path": "data/own_images"}),
        ("zipped_images", {"url": "http://127.0.0.1:9/shapes.zip", "sha256": digest, "folder": "zipped"}),
    ):
        config = {**base, "name": name, "source": {**where, **source}, "preprocess": {"val_size": 4, "test_size": 4}}
        (repo / f"conf/data/{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    repo = root / "project"
    repo.mkdir()
    for item in ("conf", "src"):
        shutil.copytree(REPO_ROOT / item, repo / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dvc_yaml = (REPO_ROOT / "dvc.yaml").read_text()
    # Swap the dataset lists (the first `vars` entry) for tiny ones; the stages stay as they are.
    dvc_yaml = re.sub(
        r"vars:\n(  .*\n)+?\n",
        "vars:\n  - " + yaml.safe_dump(DATASETS, width=200).replace("\n", "\n    ").rstrip() + "\n\n",
        dvc_yaml,
        count=1,
    )
    (repo / "dvc.yaml").write_text(dvc_yaml)
    assert yaml.safe_load(dvc_yaml)["vars"] == [DATASETS]

    mirror = root / "mirror"
    files = tiny_digits(mirror / "tiny")
    (repo / "conf/data/tiny_digits.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny_digits",
                "task": "classification",
                "source": {
                    "_target_": "pipeline.data.sources.IdxImages",
                    "folder": "tiny",
                    "urls": [],
                    "image_shape": [8, 8],
                    "class_names": [str(i) for i in range(10)],
                    "files": files,
                },
                "preprocess": {"val_size": 50, "seed": 0},
            }
        )
    )
    (repo / "conf/data/own.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "own",
                "task": "regression",
                "source": {"_target_": "pipeline.data.sources.CsvTable", "path": "data/own.csv", "target": "price"},
                "preprocess": {"val_size": 0.2, "test_size": 0.2, "seed": 0, "missing": "fail"},
            }
        )
    )
    (repo / "conf/experiment/iris_mlp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: iris\n  - override /model: mlp_classifier\n"
        "task_name: iris_mlp\ntrainer:\n  max_epochs: 2\n"
    )
    (repo / "conf/experiment/cartpole_tiny.yaml").write_text(
        "# @package _global_\ndefaults:\n  - cartpole_dqn\n  - _self_\ntask_name: cartpole_tiny\n"
        "data:\n  datamodule:\n    steps_per_epoch: 100\n    warm_up_steps: 100\n    val_episodes: 2\n"
        "    test_episodes: 3\ntrainer:\n  max_epochs: 1\n"
    )
    _write_image_datasets(repo, mirror)
    rng = np.random.default_rng(0)
    rows = "\n".join(f"{a:.3f},{b:.3f},{2 * a - b:.3f}" for a, b in rng.normal(size=(60, 2)))
    (repo / "data/own.csv").write_text("area,age,price\n" + rows + "\n")

    _sh(repo, "git", "init", "-q")
    _sh(repo, "git", "config", "user.email", "t@example.com")
    _sh(repo, "git", "config", "user.name", "test")
    _sh(repo, "dvc", "init", "-q")
    # the project's DVC config: its default remote is a folder beside the checkout (here: root/dvc-remote)
    shutil.copyfile(REPO_ROOT / ".dvc/config", repo / ".dvc/config")
    _sh(repo, "dvc", "add", "-q", "data")
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-qm", "init")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_DATA_MIRROR", str(mirror))
        yield repo


def test_repro_runs_every_stage_then_nothing(repo):
    first = _sh(repo, "dvc", "repro")
    stages = {
        f"{kind}_{group}@{name}"
        for group, names in (
            ("images", ["tiny_digits"]),
            ("generated", ["line"]),
            ("bundled", ["iris"]),
            ("csv", ["own"]),
            ("image_folders", ["own_images", "zipped_images"]),
        )
        for name in names
        for kind in ("fetch", "preprocess")
    }
    assert _ran(first) == stages | EXPERIMENT_STAGES | AGENT_STAGES
    for name in ("tiny_digits", "line", "iris", "own", "own_images", "zipped_images"):
        assert (repo / "datasets/processed" / name / "meta.json").is_file()
    assert np.load(repo / "datasets/processed/tiny_digits/test_x.npy").shape == (50, 1, 8, 8)
    for name in ("own_images", "zipped_images"):  # 20 images: 4 test, 4 val, 12 train, of dark and light
        assert np.load(repo / f"datasets/processed/{name}/test_x.npy").shape == (4, 1, 8, 8)
        assert json.loads((repo / f"datasets/processed/{name}/meta.json").read_text())["class_names"] == [
            "dark",
            "light",
        ]
    assert (repo / "experiments/iris_mlp/model.ckpt").is_file()
    metrics = json.loads(_sh(repo, "dvc", "metrics", "show", "--json"))
    shown = metrics[""]["data"]["experiments/iris_mlp/metrics.json"]["data"]
    assert 0 <= shown["test/acc"] <= 1 and "test/loss" in shown
    agent = metrics[""]["data"]["experiments/cartpole_tiny/metrics.json"]["data"]
    assert agent["test/mean_reward"] >= 8  # 3 greedy CartPole episodes: at least 8 steps each

    second = _sh(repo, "dvc", "repro")
    assert _ran(second) == set()
    skipped = len(stages) + len(EXPERIMENT_STAGES) + len(AGENT_STAGES) + 1  # + data.dvc
    assert second.count("didn't change, skipping") == skipped
    assert "Data and pipelines are up to date." in _sh(repo, "dvc", "status")


def test_dag_links_fetch_to_preprocess_per_dataset_and_data_dvc_to_own_csv(repo):
    dot = _sh(repo, "dvc", "dag", "--dot")
    edges = set(re.findall(r'"([^"]+)" -> "([^"]+)"', dot))
    for group, name in (("images", "tiny_digits"), ("generated", "line"), ("bundled", "iris"), ("csv", "own")):
        assert (f"fetch_{group}@{name}", f"preprocess_{group}@{name}") in edges
    assert ("data.dvc", "fetch_csv@own") in edges
    assert ("data.dvc", "fetch_image_folders@own_images") in edges
    assert ("fetch_image_folders@zipped_images", "preprocess_image_folders@zipped_images") in edges


def test_changing_one_dataset_reruns_only_its_stages(repo):
    _sh(repo, "dvc", "repro")
    _edit_yaml(repo / "conf/data/line.yaml", lambda d: d.setdefault("preprocess", {}).update(seed=7))
    # compose re-runs on any edit under conf/, but its output (each experiment's composed config) is
    # unchanged, so no experiment is trained again
    composes = {"compose@iris_mlp", "compose_agent@cartpole_tiny"}
    assert _ran(_sh(repo, "dvc", "repro")) == {"preprocess_generated@line", *composes}

    preset = repo / "conf/experiment/iris_mlp.yaml"  # edited as text: its `# @package` line must stay
    preset.write_text(preset.read_text().replace("max_epochs: 2", "max_epochs: 3"))
    assert _ran(_sh(repo, "dvc", "repro")) == EXPERIMENT_STAGES | {"compose_agent@cartpole_tiny"}

    _edit_yaml(repo / "conf/data/line.yaml", lambda d: d["source"]["generator"].update(n_samples=120))
    assert _ran(_sh(repo, "dvc", "repro")) == {"fetch_generated@line", "preprocess_generated@line", *composes}
    assert sum(len(np.load(repo / f"datasets/processed/line/{s}_y.npy")) for s in ("train", "val", "test")) == 120

    with open(repo / "data/own.csv", "a") as fh:
        fh.write("1.0,2.0,0.0\n")
    _sh(repo, "dvc", "add", "-q", "data")
    # every stage reading data/ looks again; the image folders' fetch finds the same images, so their
    # preprocess stays
    ran = {"fetch_csv@own", "preprocess_csv@own", "fetch_image_folders@own_images", "fetch_image_folders@zipped_images"}
    assert _ran(_sh(repo, "dvc", "repro")) == ran

    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(repo / "data/own_images/dark/new.png")
    _sh(repo, "dvc", "add", "-q", "data")
    ran = _ran(_sh(repo, "dvc", "repro"))
    assert {"fetch_image_folders@own_images", "preprocess_image_folders@own_images"} <= ran
    assert "preprocess_image_folders@zipped_images" not in ran

    # the environment's id and version are the agent's params: another version trains the agent again
    _edit_yaml(repo / "conf/data/cartpole.yaml", lambda d: d["datamodule"].update(env="CartPole-v0"))
    assert _ran(_sh(repo, "dvc", "repro")) == {*composes, "train_agent@cartpole_tiny"}
    assert "CartPole-v0" in (repo / "experiments/cartpole_tiny/config.yaml").read_text()


def _experiment(shown: list[dict], name: str) -> dict:
    """The `dvc exp show --json` record of the experiment called ``name``."""
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                if rev.get("name") == name:
                    return rev["data"]
    raise AssertionError(f"no experiment {name} in dvc exp show")


def test_dvc_exp_run_sets_a_preset_key_and_its_mlflow_run_tells_the_same_story(repo, mlflow_store):
    _sh(repo, "dvc", "repro")
    preset = repo / "conf/experiment/iris_mlp.yaml"
    # Hydra's override grammar: a key the preset has is set as is, a new one with a leading +
    output = _sh(
        repo,
        "dvc",
        "exp",
        "run",
        "-S",
        "conf/experiment/iris_mlp.yaml:trainer.max_epochs=3",
        "-S",
        "conf/experiment/iris_mlp.yaml:+optimizer.lr=0.005",
        "-n",
        "lr-005",
    )
    assert _ran(output) >= EXPERIMENT_STAGES
    assert preset.read_text().startswith("# @package _global_"), "the preset stays a Hydra preset"

    shown = _experiment(json.loads(_sh(repo, "dvc", "exp", "show", "--json")), "lr-005")
    params = shown["params"]["conf/experiment/iris_mlp.yaml"]["data"]
    assert params["optimizer"]["lr"] == 0.005 and params["trainer"]["max_epochs"] == 3
    dvc_accuracy = shown["metrics"]["experiments/iris_mlp/metrics.json"]["data"]["test/acc"]

    client = MlflowClient(mlflow_store)
    experiment_id = client.get_experiment_by_name("iris_mlp").experiment_id
    (run,) = client.search_runs([experiment_id], "tags.`dvc.experiment` = 'lr-005'")
    assert run.data.tags["dvc.stage"] == "train@iris_mlp" and run.data.params["optimizer/lr"] == "0.005"
    assert run.data.params["trainer/max_epochs"] == "3"
    assert run.data.metrics["test/acc"] == pytest.approx(dvc_accuracy)


def test_a_colleague_pulls_the_outputs_and_nothing_retrains(repo):
    """The README's team recipe: repro, commit dvc.lock, push to the default remote; a fresh clone pulls, and
    DVC reports every stage up to date, so nothing runs again."""
    _sh(repo, "dvc", "repro")
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-qm", "outputs", "--allow-empty")
    _sh(repo, "dvc", "push")
    assert (repo.parent / "dvc-remote" / "files" / "md5").is_dir()  # ../../dvc-remote from .dvc/

    colleague = repo.parent / "colleague"
    _sh(repo.parent, "git", "clone", "-q", str(repo), str(colleague))
    assert not (colleague / "experiments/iris_mlp/model.ckpt").exists()
    _sh(colleague, "dvc", "pull")
    assert (colleague / "experiments/iris_mlp/model.ckpt").read_bytes() == (
        repo / "experiments/iris_mlp/model.ckpt"
    ).read_bytes()
    assert "Data and pipelines are up to date." in _sh(colleague, "dvc", "status")
    assert _ran(_sh(colleague, "dvc", "repro")) == set()
