"""The data contract: one description of a processed dataset, one transform from raw inputs to model inputs,
the same wherever it is used (batches, checkpoints, the logged model, figures, GAN scoring)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.datamodule import ArrayDataModule
from pipeline.data.processed import read_meta
from pipeline.data.spec import DatasetSpec, ModelInput


@pytest.mark.parametrize(
    ("name", "shape", "classes", "scale"),
    [("mnist", (1, 16, 16), 10, 255.0), ("spirals", (2,), 2, 1.0), ("line", (1,), 0, 1.0)],
)
def test_the_spec_of_a_processed_dataset_and_its_checkpoint_record(processed, name, shape, classes, scale):
    spec = DatasetSpec.from_meta(read_meta(processed / name))
    assert (spec.input_shape, spec.num_classes, spec.pixel_scale) == (shape, classes, scale)
    assert DatasetSpec.from_record(spec.record()) == spec
    assert spec.model_size() == (
        {"input_shape": list(shape), "num_classes": classes} if classes else {"input_shape": list(shape)}
    )


def test_a_record_without_a_pixel_scale_reads_as_before(processed):
    """Checkpoints written before the pixel scale was recorded: images are the 3-D inputs."""
    for name, scale in (("mnist", 255.0), ("spirals", 1.0)):
        record = DatasetSpec.from_meta(read_meta(processed / name)).record()
        del record["pixel_scale"]
        assert DatasetSpec.from_record(record).pixel_scale == scale


def test_a_class_subset_is_renumbered_in_the_spec(processed):
    meta = read_meta(processed / "mnist")
    assert DatasetSpec.from_meta(meta, classes=[5, 9], relabel=True).class_names == ("5", "9")
    assert DatasetSpec.from_meta(meta, classes=[5, 9], relabel=False).num_classes == 10


@pytest.mark.parametrize(("name", "normalize"), [("mnist", True), ("mnist", False), ("spirals", True)])
def test_model_input_is_exactly_what_training_batches_are(processed, name, normalize):
    datamodule = ArrayDataModule(str(processed / name), normalize=normalize)
    datamodule.setup("test")
    x, y = datamodule.splits["test"].tensors
    batch, _ = datamodule.on_after_batch_transfer((x, y), 0)  # no trainer: no augmentation
    assert torch.equal(ModelInput(datamodule.spec)(x), batch)
    # and what that is, computed independently from meta.json
    meta = read_meta(processed / name)
    raw = x.numpy().astype(np.float32) / (255.0 if x.dtype == torch.uint8 else 1.0)
    if normalize:
        view = (1, -1) + (1,) * (raw.ndim - 2)
        mean = np.asarray(meta["normalization"]["mean"], dtype=np.float32).reshape(view)
        std = np.asarray(meta["normalization"]["std"], dtype=np.float32).reshape(view)
        raw = (raw - mean) / std
    np.testing.assert_allclose(batch.numpy(), raw, rtol=1e-6, atol=1e-6)


def test_model_input_travels_with_a_module_and_leaves_its_input_alone(processed):
    spec = DatasetSpec.from_meta(read_meta(processed / "spirals"))
    model_input = ModelInput(spec)
    assert set(model_input.state_dict()) == {"mean", "std"}  # saved (and exported) with a logged model
    x = torch.ones(3, 2)
    model_input(x)
    assert torch.equal(x, torch.ones(3, 2))
