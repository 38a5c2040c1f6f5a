"""CSV parsing and validation on files the tests write: every bad input names the file and the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.table import apply_missing_policy, encode_target, impute_with_means, read_table
from pipeline.errors import DataConfigError, DataFormatError


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


def test_reads_numeric_features_and_target(tmp_path):
    table = read_table(_csv(tmp_path, "a,b,y\n1,2.5,3\n-4,5e-1,6\n"), target="y")
    assert table.feature_names == ["a", "b"] and table.target_name == "y"
    np.testing.assert_array_equal(table.features, [[1, 2.5], [-4, 0.5]])
    assert table.target == ["3", "6"]
    assert table.lines.tolist() == [2, 3]


def test_empty_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"t.csv: the file is empty"):
        read_table(_csv(tmp_path, ""), target="y")


def test_header_without_rows(tmp_path):
    with pytest.raises(DataFormatError, match=r"has a header \(a, y\) but no data rows"):
        read_table(_csv(tmp_path, "a,y\n\n"), target="y")


def test_ragged_rows_name_the_lines(tmp_path):
    with pytest.raises(DataFormatError, match=r"header has 3 fields but line 3 has 2; line 5 has 4"):
        read_table(_csv(tmp_path, "a,b,y\n1,2,3\n1,2\n4,5,6\n1,2,3,4\n"), target="y")


def test_missing_target_column(tmp_path):
    with pytest.raises(
        DataFormatError,
        match=r"target column 'label' declared in the config is not in the header; columns are: a, b, y",
    ):
        read_table(_csv(tmp_path, "a,b,y\n1,2,3\n"), target="label")


def test_non_numeric_feature_names_line_column_and_value(tmp_path):
    with pytest.raises(DataFormatError, match=r"non-numeric feature values \(1 in all\): line 3, column 'b': 'red'"):
        read_table(_csv(tmp_path, "a,b,y\n1,2,3\n4,red,6\n"), target="y")


MISSING = "a,b,y\n1,2,0\n,5,1\n7,8,0\n9,NA,1\n10,11,\n12,13,1\n"


def test_missing_values_fail_by_default_naming_rows(tmp_path):
    table = read_table(_csv(tmp_path, MISSING), target="y")
    with pytest.raises(DataFormatError, match=r"missing values on lines 3, 5, 6\. .*`drop`.*`impute`"):
        apply_missing_policy(table, "fail")


def test_missing_values_drop(tmp_path):
    kept = apply_missing_policy(read_table(_csv(tmp_path, MISSING), target="y"), "drop")
    assert kept.lines.tolist() == [2, 4, 7]
    assert kept.target == ["0", "0", "1"]


def test_missing_values_impute_keeps_feature_gaps_for_training_means(tmp_path):
    kept = apply_missing_policy(read_table(_csv(tmp_path, MISSING), target="y"), "impute")
    assert kept.lines.tolist() == [2, 3, 4, 5, 7]  # only the row without a target goes
    train, test = impute_with_means(np.array([[1.0, np.nan], [3.0, 4.0]]), np.array([[np.nan, np.nan]]))
    np.testing.assert_array_equal(train, [[1.0, 4.0], [3.0, 4.0]])
    np.testing.assert_array_equal(test, [[2.0, 4.0]])


def test_unknown_missing_policy(tmp_path):
    with pytest.raises(DataConfigError, match="'guess' is not one of fail, drop, impute"):
        apply_missing_policy(read_table(_csv(tmp_path, "a,y\n1,2\n"), target="y"), "guess")


def test_classification_targets_become_indices_with_names(tmp_path):
    table = read_table(_csv(tmp_path, "a,y\n1,virginica\n2,setosa\n3,virginica\n"), target="y")
    y, names = encode_target(table, "classification")
    assert names == ["setosa", "virginica"] and y.tolist() == [1, 0, 1]
    numeric = read_table(_csv(tmp_path, "a,y\n1,10\n2,2.0\n3,1\n"), target="y")
    y, names = encode_target(numeric, "classification")
    assert names == ["1", "2", "10"] and y.tolist() == [2, 1, 0]


def test_regression_target_must_be_numeric(tmp_path):
    table = read_table(_csv(tmp_path, "a,y\n1,2\n2,lots\n"), target="y")
    with pytest.raises(DataFormatError, match=r"line 3, target column 'y': 'lots' is not a number"):
        encode_target(table, "regression")


def test_single_class_is_rejected(tmp_path):
    with pytest.raises(DataFormatError, match="single class"):
        encode_target(read_table(_csv(tmp_path, "a,y\n1,x\n2,x\n"), target="y"), "classification")
