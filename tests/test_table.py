"""Reading tables on files the tests write: every reading key, and every bad input named by file, line and value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.table import (
    Columns,
    CsvFormat,
    apply_missing_policy,
    encode_target,
    impute_with_means,
    read_table,
)
from pipeline.errors import DataConfigError, DataFormatError


def _csv(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "t.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _read(tmp_path: Path, text: str | bytes, target: str = "y", fmt: CsvFormat | None = None, **columns):
    return read_table(_csv(tmp_path, text), Columns(target, **columns), fmt)


def _numbers(table) -> np.ndarray:
    return table.features.to_numpy(dtype=float)


def test_reads_numeric_features_and_target(tmp_path):
    table = _read(tmp_path, "a,b,y\n1,2.5,3\n-4,5e-1,6\n")
    assert table.feature_names == ["a", "b"] and table.target_name == "y"
    np.testing.assert_array_equal(_numbers(table), [[1, 2.5], [-4, 0.5]])
    assert table.target == ["3", "6"]
    assert table.lines.tolist() == [2, 3]


def test_headerless_file_named_by_columns(tmp_path):
    fmt = CsvFormat(header=False, columns=("a", "b", "y"))
    table = _read(tmp_path, "1,2,3\n4,5,6\n", fmt=fmt)
    np.testing.assert_array_equal(_numbers(table), [[1, 2], [4, 5]])
    assert table.lines.tolist() == [1, 2]  # no header line: the first row is line 1


def test_columns_count_must_match_the_file_naming_both_numbers(tmp_path):
    with pytest.raises(DataFormatError, match=r"t.csv: source.columns names 2 columns but it has 3"):
        _read(tmp_path, "1,2,3\n", fmt=CsvFormat(header=False, columns=("a", "y")))
    with pytest.raises(DataFormatError, match=r"names 2 columns but its header has 3 \(a, b, y\)"):
        _read(tmp_path, "a,b,y\n1,2,3\n", fmt=CsvFormat(columns=("a", "y")))


def test_headerless_without_columns_is_a_config_error():
    with pytest.raises(DataConfigError, match=r"header=false needs source.columns"):
        CsvFormat(header=False)


def test_semicolons_and_decimal_commas(tmp_path):
    table = _read(tmp_path, "a;b;y\n1,5;-2,25;3\n", fmt=CsvFormat(delimiter=";", decimal=","))
    np.testing.assert_array_equal(_numbers(table), [[1.5, -2.25]])


def test_decimal_comma_hint_when_commas_are_not_declared(tmp_path):
    with pytest.raises(DataFormatError, match=r"line 2, column 'a': '1,5'.*`source.decimal: ','`"):
        _read(tmp_path, "a;y\n1,5;3\n", fmt=CsvFormat(delimiter=";"))


def test_tabs_and_runs_of_whitespace(tmp_path):
    assert _numbers(_read(tmp_path, "a\tb\ty\n1\t2\t3\n", fmt=CsvFormat(delimiter="\t"))).tolist() == [[1, 2]]
    aligned = '18.0   8   ?\t"chevy malibu"\n15.0   6   165.0\t"buick skylark"\n'
    fmt = CsvFormat(delimiter=r"\s+", header=False, columns=("mpg", "cyl", "hp", "name"))
    table = _read(tmp_path, aligned, target="mpg", fmt=fmt, drop=["name"])
    assert table.feature_names == ["cyl", "hp"]
    np.testing.assert_array_equal(_numbers(table), [[8, np.nan], [6, 165]])


def test_quoted_fields_with_delimiters_and_newlines(tmp_path):
    table = _read(tmp_path, 'a,note,y\n1,"x, y\nz",3\n2,"plain",4\n', drop=["note"])
    assert _numbers(table).tolist() == [[1], [2]]
    assert table.lines.tolist() == [2, 3]  # a quoted newline does not start a row


def test_utf8_with_bom_and_latin1(tmp_path):
    assert _read(tmp_path, "\ufeffa,y\n1,2\n").feature_names == ["a"]
    latin = "caf\xe9,y\n1,2\n".encode("latin-1")
    assert _read(tmp_path, latin, fmt=CsvFormat(encoding="latin-1")).feature_names == ["caf\xe9"]


def test_wrong_encoding_names_the_line_the_byte_and_the_key(tmp_path):
    with pytest.raises(DataFormatError, match=r"not valid utf-8 \(line 1: byte 0xe9 at offset 3\).*source.encoding"):
        _read(tmp_path, "caf\xe9,y\n1,2\n".encode("latin-1"))
    rows = "".join(f"{i},{i}\n" for i in range(5000))  # past pandas' first decoding chunk
    text = ("a,y\n" + rows + "caf\xe9,1\n").encode("latin-1")
    offset = text.index(b"\xe9")
    with pytest.raises(DataFormatError, match=rf"\(line 5002: byte 0xe9 at offset {offset}\)"):
        _read(tmp_path, text)


def test_a_delimiter_ending_every_row_is_refused_not_shifted(tmp_path):
    # pandas would otherwise take the first column as an index and shift every name one column left
    with pytest.raises(DataFormatError, match=r"every row has more fields than the header \(a delimiter at the end"):
        _read(tmp_path, "a,b,y\n1,2,3,\n4,5,6,\n")


def test_the_target_listed_as_a_feature_is_refused(tmp_path):
    with pytest.raises(DataConfigError, match=r"source.target 'y' is also listed as a feature"):
        _read(tmp_path, "a,y\n1,2\n", features=["a", "y"])


def test_empty_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"t.csv: the file is empty"):
        _read(tmp_path, "")


def test_header_without_rows(tmp_path):
    with pytest.raises(DataFormatError, match=r"has a header \(a, y\) but no data rows"):
        _read(tmp_path, "a,y\n\n")


def test_blank_lines_are_not_rows_and_keep_line_numbers(tmp_path):
    table = _read(tmp_path, "a,y\n1,2\n\n3,4\n\n")
    assert table.lines.tolist() == [2, 4]


def test_ragged_rows_name_the_lines(tmp_path):
    with pytest.raises(DataFormatError, match=r"ragged rows: line 3 has 4 fields, expected 3; line 5 has 5"):
        _read(tmp_path, "a,b,y\n1,2,3\n1,2,3,4\n4,5,6\n1,2,3,4,5\n")


def test_a_short_row_has_missing_cells_named_by_the_missing_policy(tmp_path):
    table = _read(tmp_path, "a,b,y\n1,2,3\n1,2\n")
    with pytest.raises(DataFormatError, match=r"missing values on line 3 \(a row with fewer fields"):
        apply_missing_policy(table, "fail")


def test_missing_target_column(tmp_path):
    with pytest.raises(
        DataFormatError,
        match=r"target column 'label' declared in the config is not in the file; columns are: a, b, y",
    ):
        _read(tmp_path, "a,b,y\n1,2,3\n", target="label")


@pytest.mark.parametrize("key", ["features", "drop", "categorical"])
def test_a_declared_column_that_does_not_exist(tmp_path, key):
    with pytest.raises(DataFormatError, match=rf"source.{key} names 'colour', not in the file; columns are: a, b, y"):
        _read(tmp_path, "a,b,y\n1,2,3\n", **{key: ["colour"]})


def test_features_and_drop_are_alternatives(tmp_path):
    with pytest.raises(DataConfigError, match=r"features and source.drop are alternatives"):
        _read(tmp_path, "a,b,y\n1,2,3\n", features=["a"], drop=["b"])


def test_drop_leaves_a_column_out(tmp_path):
    assert _read(tmp_path, "a,name,y\n1,x,3\n", drop=["name"]).feature_names == ["a"]


def test_text_column_is_refused_naming_line_value_and_the_keys(tmp_path):
    with pytest.raises(
        DataFormatError,
        match=r"non-numeric feature values \(1 in all\): line 3, column 'b': 'red'.*source.categorical.*source.drop",
    ):
        _read(tmp_path, "a,b,y\n1,2,3\n4,red,6\n")


def test_categorical_columns_stay_text_with_missing_as_na(tmp_path):
    table = _read(tmp_path, "a,colour,y\n1,red,3\n2,,4\n3, blue ,5\n", categorical=["colour"])
    colour = table.features["colour"]
    assert colour.isna().tolist() == [False, True, False] and colour[~colour.isna()].tolist() == ["red", "blue"]
    assert table.missing_feature_rows().tolist() == [False, True, False]


def test_a_categorical_column_with_too_many_levels(tmp_path):
    rows = "".join(f"{i},id{i},1\n" for i in range(12))
    with pytest.raises(DataFormatError, match=r"'code' has 12 distinct values, more than source.max_categories=10"):
        _read(tmp_path, "a,code,y\n" + rows, categorical=["code"], max_categories=10)


def test_categorical_must_be_a_feature(tmp_path):
    with pytest.raises(DataConfigError, match=r"source.categorical names b, which are not feature columns"):
        _read(tmp_path, "a,b,y\n1,x,3\n", categorical=["b"], drop=["b"])


MISSING = "a,b,y\n1,2,0\n,5,1\n7,8,0\n9,NA,1\n10,11,\n12,13,1\n"


def test_missing_values_fail_by_default_naming_rows(tmp_path):
    table = _read(tmp_path, MISSING)
    with pytest.raises(DataFormatError, match=r"missing values on lines 3, 5, 6 .*`drop`.*`impute`"):
        apply_missing_policy(table, "fail")


def test_missing_values_drop(tmp_path):
    kept = apply_missing_policy(_read(tmp_path, MISSING), "drop")
    assert kept.lines.tolist() == [2, 4, 7]
    assert kept.target == ["0", "0", "1"]


def test_missing_values_impute_keeps_feature_gaps_for_training_means(tmp_path):
    kept = apply_missing_policy(_read(tmp_path, MISSING), "impute")
    assert kept.lines.tolist() == [2, 3, 4, 5, 7]  # only the row without a target goes
    train, test = impute_with_means(np.array([[1.0, np.nan], [3.0, 4.0]]), np.array([[np.nan, np.nan]]))
    np.testing.assert_array_equal(train, [[1.0, 4.0], [3.0, 4.0]])
    np.testing.assert_array_equal(test, [[2.0, 4.0]])


def test_unknown_missing_policy(tmp_path):
    with pytest.raises(DataConfigError, match="'guess' is not one of fail, drop, impute"):
        apply_missing_policy(_read(tmp_path, "a,y\n1,2\n"), "guess")


def test_classification_targets_become_indices_with_names(tmp_path):
    table = _read(tmp_path, "a,y\n1,virginica\n2,setosa\n3,virginica\n")
    y, names = encode_target(table, "classification")
    assert names == ["setosa", "virginica"] and y.tolist() == [1, 0, 1]
    numeric = _read(tmp_path, "a,y\n1,10\n2,2.0\n3,1\n")
    y, names = encode_target(numeric, "classification")
    assert names == ["1", "2", "10"] and y.tolist() == [2, 1, 0]


def test_regression_target_must_be_numeric(tmp_path):
    table = _read(tmp_path, "a,y\n1,2\n2,lots\n")
    with pytest.raises(DataFormatError, match=r"line 3, target column 'y': 'lots' is not a number"):
        encode_target(table, "regression")


def test_regression_target_with_decimal_commas(tmp_path):
    table = _read(tmp_path, "a;y\n1;2,5\n", fmt=CsvFormat(delimiter=";", decimal=","))
    assert encode_target(table, "regression")[0].tolist() == [2.5]


def test_single_class_is_rejected(tmp_path):
    with pytest.raises(DataFormatError, match="single class"):
        encode_target(_read(tmp_path, "a,y\n1,x\n2,x\n"), "classification")
