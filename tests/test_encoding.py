"""Categories one-hot from the training split only, the unseen-category policy, and a standardised regression target:
each checked against an independent computation on files the tests write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.data.encoding import TableEncoding
from pipeline.data.preparing import _table_splits, preprocess_dataset
from pipeline.data.processed import load_split, read_meta
from pipeline.data.sources import CsvTable
from pipeline.data.spec import DatasetSpec
from pipeline.data.table import CsvFormat
from pipeline.errors import DataFormatError
from pipeline.models.regression import RegressionModule, fitted_affine

LINES = np.array([2, 3, 4, 5])


def _encoding(unknown: str = "error") -> TableEncoding:
    train = pd.DataFrame({"size": [1.0, 2.0, 3.0], "colour": ["red", "blue", None]})
    return TableEncoding.fit(train, ["colour"], unknown, CsvFormat())


def test_one_feature_per_training_category_in_the_column_place():
    encoding = _encoding()
    assert encoding.feature_names == ["size", "colour=blue", "colour=red"]
    rows = pd.DataFrame({"size": ["4", "5", "6", "7"], "colour": ["red", "blue", "", " red "]})
    np.testing.assert_array_equal(
        encoding.transform(rows, LINES, Path("new.csv")), [[4, 0, 1], [5, 1, 0], [6, 0, 0], [7, 0, 1]]
    )


def test_numbers_as_categories_sort_numerically():
    train = pd.DataFrame({"origin": ["10", "2", "1"]})
    assert TableEncoding.fit(train, ["origin"], "error", CsvFormat()).feature_names == [
        "origin=1",
        "origin=2",
        "origin=10",
    ]


def test_an_unseen_category_names_the_line_and_value_or_encodes_as_zeros():
    rows = pd.DataFrame({"size": ["1", "2"], "colour": ["red", "green"]})
    with pytest.raises(
        DataFormatError,
        match=r"new.csv, line 3, column 'colour': category 'green' is not one of .*"
        r"\(blue, red\); set the dataset's `source.unknown: ignore`",
    ):
        _encoding().transform(rows, LINES[:2], Path("new.csv"))
    np.testing.assert_array_equal(
        _encoding("ignore").transform(rows, LINES[:2], Path("new.csv")), [[1, 0, 1], [2, 0, 0]]
    )


def test_the_record_round_trips():
    encoding = _encoding()
    again = TableEncoding.from_record(encoding.record())
    assert again == encoding and again.feature_names == encoding.feature_names


def _preprocess(tmp_path: Path, text: str, task: str = "regression", split=None, **source) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (tmp_path / "t.csv").write_text(text)
    table = CsvTable(target="y", path=str(tmp_path / "t.csv"), **source)
    table.fetch(raw)
    split = split or {"val_size": 2, "test_size": 2, "seed": 0, "missing": "fail"}
    preprocess_dataset(table, "t", task, raw, tmp_path / "out", split)
    return tmp_path / "out"


def _seed_holding_out(row: int, n: int = 10) -> int:
    """A split seed that puts row ``row`` of ``n`` in val or test (the preprocess stage's own split)."""
    split = {"val_size": 2, "test_size": 2}
    return next(
        s for s in range(100) if row not in _table_splits(np.zeros(n), "regression", {**split, "seed": s})["train"]
    )


KINDS = ["rare", *("a" if i % 2 else "b" for i in range(1, 10))]  # "rare" on the first row only
TABLE = "x,kind,y\n" + "".join(f"{i},{kind},{i}\n" for i, kind in enumerate(KINDS))


def test_categories_come_from_the_training_split_only(tmp_path):
    split = {"val_size": 2, "test_size": 2, "seed": _seed_holding_out(0), "missing": "fail"}
    out = _preprocess(tmp_path, TABLE, split=split, categorical=["kind"], unknown="ignore")
    meta = read_meta(out)
    assert meta["feature_names"] == ["x", "kind=a", "kind=b"]  # "rare" went to val or test
    for split_name in ("train", "val", "test"):  # independently: each row's one-hot is its own category
        x, y = load_split(out, split_name)
        for row, target in zip(x, y, strict=True):
            expected = [KINDS[int(target)] == kind for kind in ("a", "b")]
            assert row[1:].tolist() == expected  # all zeros for "rare"


def test_an_unseen_category_in_val_or_test_fails_by_default_naming_its_line(tmp_path):
    split = {"val_size": 2, "test_size": 2, "seed": _seed_holding_out(0), "missing": "fail"}
    with pytest.raises(DataFormatError, match=r"table.csv, line 2, column 'kind': category 'rare' is not one of"):
        _preprocess(tmp_path, TABLE, split=split, categorical=["kind"])


def test_scale_target_records_the_training_split_statistics(tmp_path):
    rows = "\n".join(f"{i},{100 + 10 * i}" for i in range(20))
    out = _preprocess(tmp_path, "x,y\n" + rows + "\n", split={"val_size": 4, "test_size": 4, "scale_target": True})
    meta, (_, train_y) = read_meta(out), load_split(out, "train")
    assert meta["target_scale"] == pytest.approx({"mean": train_y.mean(), "std": train_y.std()})
    assert load_split(out, "test")[1].min() >= 100  # the arrays keep the target's own units
    assert DatasetSpec.from_meta(meta).model_size()["target_scale"] == pytest.approx([train_y.mean(), train_y.std()])


def test_a_regressor_learns_the_standardised_target_and_answers_in_its_units():
    module = RegressionModule(
        net=lambda input_shape, num_outputs: nn.Linear(1, 1),
        input_shape=[1],
        optimizer=None,
        target_scale=(50.0, 10.0),
    )
    with torch.no_grad():
        module.net.weight.fill_(2.0)
        module.net.bias.fill_(0.5)
    x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([70.0, 100.0])
    loss = module.model_step((x, y), "train").detach()
    scaled = torch.tensor([2.5, 4.5])  # the net's outputs
    assert float(loss) == pytest.approx(float(((scaled - (y - 50) / 10) ** 2).mean()))
    assert module(x)[:, 0].tolist() == pytest.approx([75.0, 95.0])
    metrics = module.train_metrics.compute()
    assert float(metrics["train/mae"]) == pytest.approx((5 + 5) / 2)  # |75-70|, |95-100|: in the target's units
    module._step((x, y), "val")
    assert float(module.val_loss.compute()) == pytest.approx((5**2 + 5**2) / 2)  # the logged loss: MSE in y's units
    spec = DatasetSpec("t", "regression", (1,), (), (0.0,), (1.0,), normalize=False, target_scale=(50.0, 10.0))
    assert fitted_affine(module.net, spec) == pytest.approx({"fit/w": 20.0, "fit/b": 55.0})  # 10·(2x+0.5)+50
