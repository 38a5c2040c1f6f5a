"""The GAN family on tiny data: every experiment runs, checkpoints reload, the scores are right and improve."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from pipeline.data.preparing import preprocess_dataset
from pipeline.data.sources import IdxImages
from pipeline.errors import ModelConfigError
from pipeline.models.checkpoints import load_module
from pipeline.models.gan import GANModule
from pipeline.models.gan_metrics import (
    ClassScores,
    FeatureStats,
    Scorer,
    class_accuracy,
    frechet_distance,
    inception_score,
    real_floor,
)
from pipeline.train import build_model, train
from tests.conftest import make_cfg, md5, write_idx

# module-scoped fixtures: the whole module runs in one test process (make test's --dist loadgroup)
pytestmark = pytest.mark.xdist_group("gan")

SIZE = 16  # image side: divisible by 4, as the DCGAN pair needs
GAN_EXPERIMENTS = ["mnist_gan", "mnist_dcgan", "mnist_cgan"]


def blob_digits(folder: Path, n_train: int = 1000, n_test: int = 100, seed: int = 0) -> dict[str, dict[str, str]]:
    """MNIST-like IDX files whose class c is a bright round blob at its own place on a 2×5 grid,
    jittered by up to a pixel: smooth images that a classifier and a GAN learn in seconds."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    files = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        centres = np.stack([4.0 + 8 * (labels // 5), 2.0 + 3 * (labels % 5)], axis=1) + rng.uniform(-1, 1, (n, 2))
        dist2 = (rows[None] - centres[:, 0, None, None]) ** 2 + (cols[None] - centres[:, 1, None, None]) ** 2
        images = (255 * np.exp(-dist2 / (2 * 1.5**2))).astype(np.uint8)
        role = "train" if split == "train" else "test"
        for kind, array in (("images", images), ("labels", labels)):
            name = f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            path = write_idx(folder / name, array)
            files[f"{role}_{kind}"] = {"name": name, "md5": md5(path)}
    return files


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """A tiny preprocessed dataset named mnist, so the real GAN experiment configs apply unchanged."""
    root = tmp_path_factory.mktemp("gan_data")
    files = blob_digits(root / "mirror" / "blobs")
    images = IdxImages(folder="blobs", files=files, class_names=[str(i) for i in range(10)], image_shape=(SIZE, SIZE))
    images.fetch(root / "raw" / "mnist", mirror=str(root / "mirror"))
    preprocess_dataset(
        images,
        "mnist",
        "classification",
        root / "raw" / "mnist",
        root / "processed" / "mnist",
        {"val_size": 50, "seed": 0},
    )
    return root / "processed"


@pytest.fixture(scope="module")
def scorer(processed, tmp_path_factory) -> Path:
    """A small MNIST-style classifier trained by the pipeline: the GANs' scorer."""
    tmp_path = tmp_path_factory.mktemp("scorer")
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=mnist",
        "model=mlp_classifier",
        "optimizer.lr=0.003",
        "data.datamodule.batch_size=64",
        "trainer.max_epochs=3",
        "test=false",
    )
    metrics = train(cfg)
    assert metrics["val/acc"] > 0.9
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def gan_cfg(processed: Path, tmp_path: Path, scorer: Path, experiment: str, *overrides: str) -> DictConfig:
    return make_cfg(
        processed,
        tmp_path,
        f"experiment={experiment}",
        f"model.scorer_checkpoint={scorer}",
        "model.val_samples=200",
        "model.test_samples=200",
        *overrides,
    )


@pytest.mark.parametrize("experiment", GAN_EXPERIMENTS)
def test_every_gan_experiment_runs_fast_dev_run_with_scores_and_samples(processed, scorer, tmp_path, experiment):
    cfg = gan_cfg(processed, tmp_path, scorer, experiment, "debug=fast_dev_run")
    metrics = train(cfg)
    assert math.isfinite(metrics["test/fid"]) and metrics["test/fid"] >= 0
    assert 1 - 1e-6 <= metrics["test/is"] <= 10 + 1e-6
    assert {"train/d_loss", "train/g_loss", "val/fid", "val/is"} <= metrics.keys()
    assert ("test/class_acc" in metrics) == (experiment == "mnist_cgan")
    grid = Image.open(tmp_path / "run" / "figures" / "samples_final.png")  # drawn by the GANProgress callback
    cols = cfg.model.grid_cols
    rows = 10 if experiment in ("mnist_cgan", "mnist_dcgan") else cols  # one row per class (per InfoGAN code)
    assert grid.size == (cols * (SIZE + 2) + 2, rows * (SIZE + 2) + 2)


def test_checkpoint_holds_only_the_gan_and_reloads(processed, scorer, tmp_path):
    cfg = gan_cfg(
        processed,
        tmp_path,
        scorer,
        "mnist_cgan",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "data.datamodule.batch_size=64",
        "callbacks.gan_progress.every_n_steps=2",
        "test=false",
    )
    train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    # the networks (the generator's moving average too), never the scorer
    assert {k.split(".")[0] for k in checkpoint["state_dict"]} == {
        "generator",
        "generator_ema",
        "discriminator",
        "fixed_noise",
    }
    module, record = load_module(path, family="gan")
    assert isinstance(module, GANModule) and module.conditional and record["family"] == "gan"
    assert torch.equal(module.generator.embed.weight, checkpoint["state_dict"]["generator.embed.weight"])
    images = module(torch.randn(4, module.hparams.latent_dim), torch.tensor([0, 1, 2, 3]))
    assert images.shape == (4, 1, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(ModelConfigError, match="holds a gan model"):
        load_module(path, family="classification")
    checkpoint["pipeline"]["model"]["sample_evry_n_steps"] = 500  # an unknown key fails, naming itself
    torch.save(checkpoint, tmp_path / "typo.ckpt")
    with pytest.raises(ModelConfigError, match="sample_evry_n_steps"):
        load_module(tmp_path / "typo.ckpt", family="gan")
    samples = tmp_path / "run" / "figures" / "samples"  # every 2 batches, and the last one
    assert {p.name for p in samples.iterdir()} == {"step_000002.png", "step_000003.png"}


def test_ema_generator_averages_the_trained_one_and_is_checkpointed(processed, scorer, tmp_path):
    cfg = gan_cfg(
        processed,
        tmp_path,
        scorer,
        "mnist_dcgan",
        "model.ema_decay=0.9",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=5",
        "data.datamodule.batch_size=32",
        "test=false",
    )
    train(cfg)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    assert int(state["generator_ema.n_averaged"]) == 5  # one update per generator step
    trained, averaged = state["generator.body.0.weight"], state["generator_ema.module.body.0.weight"]
    assert not torch.equal(trained, averaged)  # an average of the five steps' weights, not the last one
    module, _ = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt", family="gan")
    assert module.sampler is module.generator_ema.module
    assert torch.equal(module.sampler.body[0].weight, averaged)  # samples come from the average
    with pytest.raises(ModelConfigError, match="ema_decay must be in"):
        build_model(
            make_cfg(processed, tmp_path, "experiment=mnist_gan", "model.ema_decay=1.5"),
            instantiate(cfg.data.datamodule).spec,
        )


def test_infogan_code_conditions_the_generator_and_is_read_back(processed, scorer, tmp_path):
    cfg = gan_cfg(
        processed,
        tmp_path,
        scorer,
        "mnist_dcgan",
        "model.aux_classifier=false",
        "model.latent_code=4",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "data.datamodule.batch_size=32",
        "callbacks.gan_progress.every_n_steps=0",
        "test=false",
    )
    train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module, _ = load_module(path, family="gan")
    assert module.latent_code == 4 and module.discriminator.classifier.out_features == 4  # the code head
    assert module.generator.embed.num_embeddings == 4  # the generator reads the code, not the 10 digits
    z = torch.randn(1, module.hparams.latent_dim).repeat(4, 1)
    images = module.eval()(z, torch.arange(4))
    assert not torch.allclose(images[0], images[1])  # same noise, another code: another image
    grid = Image.open(tmp_path / "run" / "figures" / "samples_final.png")
    assert grid.size[1] == 4 * (SIZE + 2) + 2  # one row per code
    assert (tmp_path / "run" / "figures" / "samples_per_code.png").is_file()
    assert module(torch.randn(3, module.hparams.latent_dim)).shape == (3, 1, SIZE, SIZE)  # random codes


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.aux_classifier=true", "model.latent_code=10"], "cannot be combined"),
        (["model.latent_code=1"], "at least 2 categories"),
    ],
)
def test_bad_infogan_settings_are_refused(processed, tmp_path, overrides, message):
    cfg = make_cfg(processed, tmp_path, "experiment=mnist_dcgan", *overrides)
    with pytest.raises(ModelConfigError, match=message):
        build_model(cfg, instantiate(cfg.data.datamodule).spec)


def test_a_short_run_improves_the_score(processed, scorer, tmp_path):
    cfg = gan_cfg(
        processed,
        tmp_path,
        scorer,
        "mnist_gan",
        "data.datamodule.classes=null",
        "model.latent_dim=16",
        "data.datamodule.batch_size=32",
        "optimizer.lr=0.001",
        "trainer.max_epochs=10",
    )
    datamodule = instantiate(cfg.data.datamodule)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    initial = trainer.test(build_model(cfg, datamodule.spec), datamodule=datamodule, verbose=False)[0]
    metrics = train(cfg)  # tests the checkpoint of the lowest val/fid
    assert metrics["test/fid"] < 0.8 * initial["test/fid"], (initial, metrics)


def test_bad_configs_fail_before_training(processed, scorer, tmp_path):
    cfg = gan_cfg(processed, tmp_path, scorer, "mnist_gan", "data.datamodule.normalize=true")
    with pytest.raises(ModelConfigError, match="normalize=false"):
        train(cfg)
    cfg = make_cfg(processed, tmp_path, "experiment=mnist_dcgan", "model.scorer_checkpoint=/no/such/scorer.ckpt")
    with pytest.raises(ModelConfigError, match=r"scorer_checkpoint=/no/such/scorer.ckpt does not exist"):
        train(cfg)


def test_a_non_finite_loss_names_the_step(processed, tmp_path):
    cfg = make_cfg(processed, tmp_path, "experiment=mnist_gan")
    module = build_model(cfg, instantiate(cfg.data.datamodule).spec)
    with pytest.raises(FloatingPointError, match=r"generator loss is nan at step 0"):
        module._finite(torch.tensor(float("nan")), "generator")


# --- the metric functions on known inputs ----------------------------------------------------------


def test_frechet_distance_on_known_features():
    torch.manual_seed(0)
    features = torch.randn(500, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    same = frechet_distance(FeatureStats.of(features), FeatureStats.of(features))
    assert same == pytest.approx(0, abs=1e-8)
    shifted = frechet_distance(FeatureStats.of(features), FeatureStats.of(features + 0.5))
    assert shifted == pytest.approx(6 * 0.25, rel=1e-6)  # same covariance: only ‖Δμ‖² remains
    scaled = frechet_distance(FeatureStats.of(features), FeatureStats.of(features * 2))
    assert scaled > shifted > same
    streamed = FeatureStats()
    for chunk in features.split(64):
        streamed.update(chunk)
    assert frechet_distance(streamed, FeatureStats.of(features * 2)) == pytest.approx(scaled, rel=1e-9)


def test_frechet_distance_matches_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    torch.manual_seed(1)
    real, fake = torch.randn(300, 5), torch.randn(300, 5) * 1.5 + 0.3
    identity = nn.Identity()
    identity.num_features = 5  # the features are given directly
    reference = FrechetInceptionDistance(feature=identity)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    assert frechet_distance(FeatureStats.of(real), FeatureStats.of(fake)) == pytest.approx(
        float(reference.compute()), rel=1e-4
    )


def test_inception_score_on_known_predictions():
    confident_uniform = torch.eye(10).repeat(7, 1)  # every class equally often, each image certain
    assert inception_score(confident_uniform) == pytest.approx(10)
    assert inception_score(torch.eye(10)[[3] * 50]) == pytest.approx(1)  # always the same class
    assert inception_score(torch.full((40, 10), 0.1)) == pytest.approx(1)  # never sure of anything
    assert 1 < inception_score(torch.softmax(torch.randn(200, 10) * 3, dim=1)) < 10


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchmetrics: features kept in memory; one split: no std
def test_inception_score_matches_torchmetrics():
    from torchmetrics.image.inception import InceptionScore

    torch.manual_seed(2)
    logits = torch.randn(256, 10) * 2
    reference = InceptionScore(feature=nn.Identity(), splits=1)  # logits given directly; one split: exact
    reference.update(logits)
    assert inception_score(logits.softmax(dim=1)) == pytest.approx(float(reference.compute()[0]), rel=1e-4)


def test_class_accuracy_counts_the_requested_class():
    probs = torch.eye(4)[[0, 1, 2, 2]]  # the classifier reads 0, 1, 2, 2
    assert class_accuracy(probs, torch.tensor([0, 1, 2, 3])) == pytest.approx(0.75)
    scores = ClassScores()
    scores.update(probs[:2], torch.tensor([0, 0]))
    scores.update(probs[2:], torch.tensor([2, 2]))
    assert scores.accuracy() == pytest.approx(0.75)


def test_scorer_and_floor_on_real_tiny_data(processed, scorer):
    floor = real_floor(Scorer.from_checkpoint(scorer), processed / "mnist")
    assert floor["n_train"] == 950 and floor["n_test"] == 100
    assert floor["is_test"] > 5  # the blobs are easy: confident, balanced predictions
    assert 0 <= floor["fid_train_vs_test"] < 10
