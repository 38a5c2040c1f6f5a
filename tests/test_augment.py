"""Batch augmentation: each image its own random rotation, shift and mirroring, only on training batches, repeatable."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from pipeline.data.augment import RandomAffine
from pipeline.data.datamodule import ArrayDataModule
from pipeline.errors import DataConfigError
from pipeline.train import train
from tests.conftest import make_cfg


def blob_batch(n: int = 16, height: int = 16, width: int = 16) -> torch.Tensor:
    """n copies of one off-centre, asymmetric bright shape on a black background, floats in [0, 1]."""
    x = torch.zeros(n, 1, height, width)
    x[:, :, 4:8, 5:7] = 1.0
    x[:, :, 6:8, 7:11] = 0.5
    return x


def centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    """(row, column) centre of mass of each image, N×2."""
    _, _, height, width = x.shape
    rows = torch.arange(height, dtype=x.dtype).view(1, 1, height, 1)
    cols = torch.arange(width, dtype=x.dtype).view(1, 1, 1, width)
    mass = x.sum(dim=(1, 2, 3))
    return torch.stack([(x * rows).sum(dim=(1, 2, 3)) / mass, (x * cols).sum(dim=(1, 2, 3)) / mass], dim=1)


def test_each_image_in_a_batch_gets_its_own_transform():
    torch.manual_seed(0)
    out = RandomAffine(rotation_degrees=15, shift_fraction=0.1)(blob_batch(16))
    flat = out.flatten(1)
    distinct = {tuple(row.tolist()) for row in flat}
    assert len(distinct) == 16  # torchvision's v2 RandomAffine on the batch would give 1


def test_zero_rotation_and_shift_is_the_identity():
    x = torch.rand(4, 1, 16, 16)
    assert RandomAffine(0, 0)(x) is x
    # Vanishingly small transforms go through affine_grid + grid_sample: pixel centres map onto themselves.
    torch.manual_seed(0)
    assert torch.allclose(RandomAffine(1e-6, 1e-7)(x), x, atol=1e-4)


def test_flip_mirrors_some_images_left_right():
    x = blob_batch(32)
    assert torch.allclose(RandomAffine(flip_probability=1)(x), torch.flip(x, dims=[-1]), atol=1e-5)
    torch.manual_seed(0)
    out = RandomAffine(flip_probability=0.5)(x)
    flipped = [torch.allclose(image, torch.flip(x[0], dims=[-1]), atol=1e-5) for image in out]
    kept = [torch.allclose(image, x[0], atol=1e-5) for image in out]
    assert all(f or k for f, k in zip(flipped, kept, strict=False)) and 5 < sum(flipped) < 27


def test_shift_fraction_bounds_the_displacement():
    torch.manual_seed(0)
    x = blob_batch(64)
    moved = centre_of_mass(RandomAffine(0, shift_fraction=0.25)(x)) - centre_of_mass(x)
    assert moved.abs().max() <= 0.25 * 16 + 0.1  # at most a quarter of the image, per axis
    assert moved.abs().max() > 2  # and the full range is used, not half of it


@pytest.mark.parametrize(("shape", "dtype"), [((8, 1, 28, 28), torch.float32), ((3, 3, 12, 20), torch.float64)])
def test_shape_and_dtype_are_kept(shape, dtype):
    x = torch.rand(shape, dtype=dtype)
    out = RandomAffine(10, 0.1)(x)
    assert out.shape == x.shape and out.dtype == dtype


def test_bad_inputs_and_settings_are_refused():
    with pytest.raises(ValueError, match="float image batch"):
        RandomAffine(10, 0.1)(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shift_fraction in"):
        RandomAffine(10, 1.5)


def test_repeats_under_the_same_seed():
    x = blob_batch(8)
    augment = RandomAffine(10, 0.1)
    torch.manual_seed(3)
    first = augment(x)
    torch.manual_seed(3)
    assert torch.equal(augment(x), first)
    torch.manual_seed(4)
    assert not torch.equal(augment(x), first)


def test_datamodule_augments_training_batches_only(processed, tmp_path):
    cfg = make_cfg(
        processed, tmp_path, "data=mnist", "data.datamodule.augment={rotation_degrees:20,shift_fraction:0.2}"
    )
    datamodule = instantiate(cfg.data.datamodule)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    plain = make_cfg(processed, tmp_path, "data=mnist")
    reference, _ = instantiate(plain.data.datamodule).on_after_batch_transfer((x, y), 0)

    for trainer in (None, SimpleNamespace(training=False)):  # no trainer; validating or testing
        datamodule.trainer = trainer
        out, _ = datamodule.on_after_batch_transfer((x, y), 0)
        assert torch.equal(out, reference)
    datamodule.trainer = SimpleNamespace(training=True)
    out, labels = datamodule.on_after_batch_transfer((x, y), 0)
    assert out.shape == reference.shape and out.dtype == torch.float32 and torch.equal(labels, y)
    assert not torch.equal(out, reference)


def test_augment_is_for_images_and_names_bad_keys(processed):
    with pytest.raises(DataConfigError, match="augment is for image datasets; blobs has inputs of shape"):
        ArrayDataModule(str(processed / "blobs"), augment={"rotation_degrees": 10})
    with pytest.raises(DataConfigError, match=r"augment=.*degrees"):
        ArrayDataModule(str(processed / "mnist"), augment={"degrees": 10})
    assert ArrayDataModule(str(processed / "mnist"), augment=None).augment is None


def test_training_run_augments_only_the_training_batches(processed, tmp_path, monkeypatch):
    calls: list[int] = []
    forward = RandomAffine.forward
    monkeypatch.setattr(RandomAffine, "forward", lambda self, x: calls.append(len(x)) or forward(self, x))
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=mnist",
        "model=tiny_cnn",
        "data.datamodule.batch_size=16",
        "data.datamodule.augment={rotation_degrees:10,shift_fraction:0.1}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2",
    )
    metrics = train(cfg)
    assert calls == [16, 16, 16]  # three training batches; the sanity check, validation and test are not augmented
    assert "test/acc" in metrics
