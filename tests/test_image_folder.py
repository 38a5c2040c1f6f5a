"""Image folders (torchvision's ImageFolder layout) on files the tests write: layouts, labels, decoding,
every error naming its file, and exact channel statistics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import image_folder
from pipeline.data.image_folder import channel_statistics, decode_image, decode_images, list_image_folder
from pipeline.errors import DataConfigError, DataFormatError


def _write(path: Path, size: tuple[int, int] = (8, 6), mode: str = "RGB", color: float | tuple[int, ...] = 0) -> Path:
    """An image of ``size`` (W, H) in ``mode``, saved in the format of its suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _classes(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        for i in range(count):
            _write(root / name / f"{i:03d}.png")
    return root


def _names(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in paths]


# Listing: layouts, order, labels


def test_one_folder_per_class_is_one_split_with_sorted_classes_and_files(tmp_path):
    _write(tmp_path / "dog" / "b.png")
    _write(tmp_path / "dog" / "a.JPG")
    _write(tmp_path / "cat" / "z.jpeg")
    _write(tmp_path / "Bird" / "1.bmp")
    files = list_image_folder(tmp_path)
    assert files.class_names == ["Bird", "cat", "dog"]  # code-point order, as torchvision sorts
    assert list(files.splits) == ["all"]
    paths, labels = files.splits["all"]
    assert _names(paths) == ["Bird/1.bmp", "cat/z.jpeg", "dog/a.JPG", "dog/b.png"]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 2]


def test_train_and_test_folders_are_the_official_split(tmp_path):
    _classes(tmp_path / "train", {"a": 2, "b": 3})
    _classes(tmp_path / "test", {"b": 1, "a": 1})
    files = list_image_folder(tmp_path)
    assert files.class_names == ["a", "b"] and list(files.splits) == ["train", "test"]
    assert files.splits["train"][1].tolist() == [0, 0, 1, 1, 1]
    assert _names(files.splits["test"][0]) == ["a/000.png", "b/000.png"]
    assert files.splits["test"][1].tolist() == [0, 1]


def test_a_class_missing_from_test_warns_and_keeps_its_label(tmp_path, caplog):
    _classes(tmp_path / "train", {"a": 1, "b": 1, "c": 1})
    _classes(tmp_path / "test", {"a": 1, "c": 2})
    with caplog.at_level(logging.WARNING, logger="pipeline.data.image_folder"):
        files = list_image_folder(tmp_path)
    assert files.class_names == ["a", "b", "c"]
    assert files.splits["test"][1].tolist() == [0, 2, 2]
    assert "['b'] have no folder in test/" in caplog.text


def test_a_class_only_in_test_is_an_error_naming_it(tmp_path):
    _classes(tmp_path / "train", {"a": 1, "b": 1})
    _classes(tmp_path / "test", {"a": 1, "zebra": 1})
    with pytest.raises(DataFormatError, match=r"test/zebra: class\(es\) zebra in test/ but not in train/"):
        list_image_folder(tmp_path)


def test_an_archives_wrapping_folders_are_descended_into(tmp_path):
    _classes(tmp_path / "export" / "dataset" / "train", {"a": 1, "b": 1})
    _classes(tmp_path / "export" / "dataset" / "test", {"a": 1, "b": 1})
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    _write(tmp_path / "__MACOSX" / "export" / "._x.png")
    files = list_image_folder(tmp_path)
    assert list(files.splits) == ["train", "test"] and files.class_names == ["a", "b"]
    assert files.splits["train"][0][0] == tmp_path / "export" / "dataset" / "train" / "a" / "000.png"


def test_a_single_folder_of_images_is_one_class_not_a_wrapper(tmp_path):
    _classes(tmp_path, {"only": 2})
    files = list_image_folder(tmp_path)
    assert files.class_names == ["only"] and files.splits["all"][1].tolist() == [0, 0]


def test_a_class_folders_sub_folders_are_read_after_its_own_files(tmp_path):
    _write(tmp_path / "a" / "z.png")
    _write(tmp_path / "a" / "sub" / "y.png")
    _write(tmp_path / "a" / "sub" / "deeper" / "x.png")
    _write(tmp_path / "b" / "1.png")
    paths, labels = list_image_folder(tmp_path).splits["all"]
    expected = ["a/z.png", "a/sub/y.png", "a/sub/deeper/x.png", "b/1.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == expected
    assert labels.tolist() == [0, 0, 0, 1]


def test_max_images_per_class_keeps_the_first_files_of_each_class_per_split(tmp_path):
    _classes(tmp_path / "train", {"a": 5, "b": 2})
    _classes(tmp_path / "test", {"a": 3, "b": 3})
    files = list_image_folder(tmp_path, max_images_per_class=2)
    assert _names(files.splits["train"][0]) == ["a/000.png", "a/001.png", "b/000.png", "b/001.png"]
    assert files.splits["test"][1].tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "3"])
def test_max_images_per_class_must_be_a_positive_int(tmp_path, limit):
    with pytest.raises(DataConfigError, match=r"source.max_images_per_class="):
        list_image_folder(_classes(tmp_path, {"a": 1}), max_images_per_class=limit)


def test_other_files_are_skipped_with_one_warning_and_hidden_ones_silently(tmp_path, caplog):
    _classes(tmp_path, {"a": 2, "b": 1})
    (tmp_path / "README.txt").write_text("hi")
    (tmp_path / "a" / "labels.csv").write_text("x")
    (tmp_path / "b" / "notes.md").write_text("x")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")  # hidden: neither read nor counted (nor 0-byte checked)
    _write(tmp_path / ".cache" / "c" / "1.png")  # a hidden folder is not a class
    with caplog.at_level(logging.WARNING, logger="pipeline.data.image_folder"):
        files = list_image_folder(tmp_path)
    assert files.class_names == ["a", "b"] and len(files.splits["all"][0]) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 3 files that are not images, e.g. " in warnings[0]


# Listing: errors, each naming the path


def test_root_missing_or_a_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"nowhere: no such folder"):
        list_image_folder(tmp_path / "nowhere")
    with pytest.raises(DataFormatError, match=r"x.png: not a folder"):
        list_image_folder(_write(tmp_path / "x.png"))


def test_no_class_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataFormatError, match=rf"{tmp_path}: no class folders"):
        list_image_folder(tmp_path)


def test_only_images_in_root_is_not_a_class_layout(tmp_path):
    _write(tmp_path / "1.png")
    with pytest.raises(DataFormatError, match=r"image files directly in it \(1, e.g. 1.png\) and no class folders"):
        list_image_folder(tmp_path)


def test_images_next_to_class_folders(tmp_path):
    _classes(tmp_path, {"a": 1, "b": 1})
    _write(tmp_path / "stray.jpg")
    with pytest.raises(DataFormatError, match=rf"{tmp_path}: image files directly in it .*stray.jpg\) next to"):
        list_image_folder(tmp_path)


def test_an_empty_class_folder(tmp_path):
    _classes(tmp_path, {"a": 1})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "info.txt").write_text("x")
    with pytest.raises(DataFormatError, match=r"/b: an empty class folder"):
        list_image_folder(tmp_path)


def test_a_zero_byte_image_fails_at_listing(tmp_path):
    _classes(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "b" / "broken.png").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"b/broken.png: an empty file \(0 bytes\)"):
        list_image_folder(tmp_path)


@pytest.mark.parametrize("folders", [["train"], ["train", "test", "val"]])
def test_split_folders_need_each_other_and_nothing_else(tmp_path, folders):
    for folder in folders:
        _classes(tmp_path / folder, {"a": 1})
    with pytest.raises(DataFormatError, match=r"expected either train/ and test/ only"):
        list_image_folder(tmp_path)


# Decoding


def test_a_solid_colour_decodes_to_its_channel_values_as_c_h_w(tmp_path):
    file = _write(tmp_path / "red.png", size=(5, 3), color=(200, 10, 30))
    out = np.zeros((1, 3, 3, 5), np.uint8)
    decode_images([file], out, (3, 5), channels=3)
    assert out[0, :, 1, 2].tolist() == [200, 10, 30]
    for channel, value in enumerate((200, 10, 30)):
        assert (out[0, channel] == value).all()


def test_jpeg_and_grey_read_as_three_equal_planes(tmp_path):
    grey = _write(tmp_path / "g.jpg", size=(6, 4), mode="L", color=90)
    pixels = decode_image(grey, (4, 6), channels=3)
    assert pixels.shape == (3, 4, 6)
    np.testing.assert_array_equal(pixels[0], pixels[1])
    np.testing.assert_array_equal(pixels[0], pixels[2])
    assert abs(int(pixels[0, 2, 3]) - 90) <= 2  # JPEG is lossy


def test_rgb_read_as_grey_is_pillows_luma(tmp_path):
    file = _write(tmp_path / "c.png", size=(4, 4), color=(255, 0, 0))
    pixels = decode_image(file, (4, 4), channels=1)
    assert pixels.shape == (1, 4, 4) and (pixels == 76).all()  # L = 0.299 R + 0.587 G + 0.114 B


def test_rgba_and_palette_images_drop_transparency(tmp_path):
    rgba = _write(tmp_path / "a.png", size=(3, 3), mode="RGBA", color=(10, 20, 30, 0))
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 250, 100, 5] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=0)
    gif = _write(tmp_path / "p.gif", size=(3, 3), mode="P", color=0)
    assert decode_image(rgba, (3, 3), 3)[:, 0, 0].tolist() == [10, 20, 30]
    assert decode_image(tmp_path / "p.png", (3, 3), 3)[:, 1, 1].tolist() == [250, 100, 5]
    assert decode_image(gif, (3, 3), 1).shape == (1, 3, 3)


def test_resizing_matches_pillows_bilinear_resize(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    file = tmp_path / "noise.png"
    Image.fromarray(array).save(file)
    expected = np.asarray(Image.fromarray(array).resize((28, 28), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_image(file, (28, 28), 3), expected)


def test_a_non_square_target_is_height_then_width(tmp_path):
    file = _write(tmp_path / "x.png", size=(10, 10))
    assert decode_image(file, (4, 7), 1).shape == (1, 4, 7)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    file = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(file)
    assert Image.open(file).mode.startswith("I;16")
    assert decode_image(file, (1, 4), 1)[0, 0].tolist() == [0, 1, 128, 255]


def test_decoding_into_a_memory_mapped_npy(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (7, 8, 9)]
    files = [_write(tmp_path / "img" / f"{i}.png", size=(12, 9), color=c) for i, c in enumerate(colours)]
    out = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(4, 3, 6, 6))
    decode_images(files, out, (6, 6), channels=3)
    out.flush()
    del out
    saved = np.load(tmp_path / "x.npy")
    assert saved.shape == (4, 3, 6, 6)
    assert [saved[i, :, 0, 0].tolist() for i in range(4)] == [list(c) for c in colours]


def test_progress_is_logged(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(image_folder, "PROGRESS_EVERY", 2)
    files = [_write(tmp_path / f"{i}.png") for i in range(4)]
    with caplog.at_level(logging.INFO, logger="pipeline.data.image_folder"):
        decode_images(files, np.zeros((4, 1, 6, 8), np.uint8), (6, 8), 1)
    assert [r.getMessage() for r in caplog.records] == ["decoded 2 of 4 images", "decoded 4 of 4 images"]


# Decoding: errors, each naming the file


def test_a_truncated_png(tmp_path):
    file = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(file)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"cut.png: a broken, truncated or unreadable image file \(image file is"):
        decode_image(file, (32, 32), 3)


def test_a_text_file_named_png(tmp_path):
    file = tmp_path / "fake.png"
    file.write_text("not an image")
    with pytest.raises(DataFormatError, match=r"fake.png: not an image Pillow can read"):
        decode_images([file], np.zeros((1, 3, 2, 2), np.uint8), (2, 2), 3)


def test_a_zero_byte_file(tmp_path):
    file = tmp_path / "empty.jpg"
    file.write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"empty.jpg: an empty file \(0 bytes\)"):
        decode_image(file, (2, 2), 1)


def test_a_mode_pillow_cannot_convert(tmp_path):
    # Pillow 13 converts a CIELab image to RGB but not to L ("conversion from LAB to RGB not supported").
    file = _write(tmp_path / "lab.tif", size=(4, 4), mode="LAB", color=(50, 10, 20))
    assert Image.open(file).mode == "LAB"
    assert decode_image(file, (4, 4), 3).shape == (3, 4, 4)
    with pytest.raises(DataFormatError, match=r"lab.tif: a LAB image cannot be converted to L"):
        decode_image(file, (4, 4), 1)


@pytest.mark.parametrize("channels", [0, 2, 4, True])
def test_channels_must_be_one_or_three(tmp_path, channels):
    with pytest.raises(DataConfigError, match=rf"source.channels={channels!r}: expected 1 \(grey\) or 3 \(RGB\)"):
        decode_images([], np.zeros((0, 1, 2, 2), np.uint8), (2, 2), channels)


@pytest.mark.parametrize("size", [(0, 4), (4,), (4, 4, 4), (2.5, 4), "44", 28, (True, 4)])
def test_image_size_must_be_two_positive_ints(tmp_path, size):
    with pytest.raises(DataConfigError, match=r"source.image_size=.*: expected \[height, width\]"):
        decode_images([], np.zeros((0, 1, 2, 2), np.uint8), size, 1)


def test_out_must_fit_the_files(tmp_path):
    with pytest.raises(ValueError, match=r"expected uint8 of shape \(1, 3, 2, 2\)"):
        decode_images([tmp_path / "a.png"], np.zeros((1, 1, 2, 2), np.uint8), (2, 2), 3)


# Channel statistics


@pytest.mark.parametrize(("n", "chunk"), [(1, 4096), (37, 8), (64, 16), (50, 4096)])
def test_channel_statistics_match_numpy_in_float64(n, chunk):
    x = np.random.default_rng(n).integers(0, 256, (n, 3, 5, 7), dtype=np.uint8)
    mean, std = channel_statistics(x, chunk=chunk)
    pixels = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), rtol=0, atol=1e-9)


def test_channel_statistics_chunks_by_pixels_and_read_a_memmap(tmp_path, monkeypatch):
    monkeypatch.setattr(image_folder, "_CHUNK_PIXELS", 100)  # 75 pixels an image: one image a chunk
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(11, 1, 5, 15))
    x[:] = np.random.default_rng(3).integers(0, 256, x.shape, dtype=np.uint8)
    mean, std = channel_statistics(np.load(tmp_path / "x.npy", mmap_mode="r"))
    pixels = np.asarray(x, dtype=np.float64) / 255
    assert abs(mean[0] - pixels.mean()) < 1e-9 and abs(std[0] - pixels.std()) < 1e-9


def test_channel_statistics_of_constant_and_extreme_images():
    assert channel_statistics(np.full((3, 2, 4, 4), 255, np.uint8)) == ([1.0, 1.0], [0.0, 0.0])
    x = np.zeros((2, 1, 1, 1), np.uint8)
    x[1] = 255
    assert channel_statistics(x) == ([0.5], [0.5])


def test_channel_statistics_wants_a_uint8_nchw_array():
    with pytest.raises(ValueError, match=r"uint8 array of shape \(N, C, H, W\)"):
        channel_statistics(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(ValueError, match=r"uint8"):
        channel_statistics(np.zeros((2, 1, 4, 4), np.float32))


# The memory benchmark runs end to end (tiny)


def test_memory_bench_runs_and_writes_its_table(tmp_path):
    from bench import image_folder_memory

    # 100 images in the quarter run: 10 per class, enough for stratified 15 % val and test splits
    row = image_folder_memory.main(["--images", "400", "--size", "8", "--out", str(tmp_path)])
    assert row["images"] == 400 and row["child_peak_rss_kib"] > 0
    assert row["stage_quarter"]["peak_rss_kib"] > 0 and row["stage_all"]["peak_rss_kib"] > 0
    report = (tmp_path / "image_folder_memory.md").read_text()
    assert "| peak RSS of the child" in report and "| `pipeline.preprocess`, 400 images" in report
