"""Medical image files: which MONAI reader opens a path, and one clear line when a file is not
what its name claims (a text file called ``.nii.gz``, a truncated download, an empty DICOM folder).

MONAI's transforms wrap every exception they meet in ``RuntimeError("applying transform ...")``;
``usage_errors_unwrapped`` gives the one-line error back to the person who ran the command, and
``input_path`` does the same for an input to predict, named as its client named it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import NibabelReader, PILReader, PydicomReader
from monai.data.image_reader import ImageReader
from monai.transforms import LoadImage, MapTransform

from dlguide import RawInput, UsageError, first_line

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_MAGIC_OFFSET = 128  # a DICOM Part 10 file has a 128-byte preamble, then b"DICM"

# MONAI builds its optional GPU DICOM decoder with every loader and warns when the GPU library
# is absent; the CPU decoders of pydicom read the same files, so the warning says nothing useful
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


def kind_of(path: Path) -> str:
    """``nifti``, ``picture`` or ``dicom`` (a ``.dcm`` file, a file with the DICOM magic, or a folder)."""
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PICTURE_SUFFIXES):
        return "picture"
    if name.endswith(DICOM_SUFFIXES) or _has_dicom_magic(path):
        return "dicom"
    raise UsageError(f"{path}: unsupported image file; expected NIfTI (.nii, .nii.gz), DICOM (.dcm or a series "
                     f"folder) or PNG/JPEG")


def _has_dicom_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(DICOM_MAGIC_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def check_input(path: Path, allowed: tuple[str, ...] = ("nifti", "dicom", "picture")) -> str:
    """The kind of image at ``path``; a missing path, an empty folder or a kind outside ``allowed`` is a UsageError."""
    if not path.exists():
        raise UsageError(f"image not found: {path}")
    kind = kind_of(path)
    if kind not in allowed:
        raise UsageError(f"{path}: a {kind} image cannot be used here; expected {' or '.join(allowed)}")
    if kind == "dicom" and path.is_dir() and not any(p.is_file() and not p.name.startswith(".")
                                                     for p in path.iterdir()):
        raise UsageError(f"{path}: empty DICOM folder; expected the .dcm files of one series")
    return kind


@functools.cache
def _loader(kind: str) -> LoadImage:
    # one loader per kind: building a LoadImage instantiates every reader MONAI knows, which is slow
    readers: dict[str, Callable[[], ImageReader]] = {
        "nifti": NibabelReader,
        "picture": PILReader,
        # RAS like NIfTI, so a label volume predicted from DICOM is written with a correct NIfTI affine
        "dicom": functools.partial(PydicomReader, affine_lps_to_ras=True),
    }
    with warnings.catch_warnings():  # the GPU DICOM decoder's absence, see the logger above
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        return LoadImage(reader=readers[kind](), image_only=True)


def load_image(path: Path, allowed: tuple[str, ...] = ("nifti", "dicom", "picture")) -> Any:
    """Read one image (a MetaTensor with its affine; channels as stored) or raise a one-line UsageError."""
    kind = check_input(path, allowed)
    try:
        with warnings.catch_warnings():  # a value too large for 32-bit floats: refused below as infinite
            warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
            image = _loader(kind)(str(path))
    except UsageError:
        raise
    except Exception as exc:  # nibabel, gzip, zlib, PIL and pydicom each raise their own types
        reason = first_line(exc).replace(f" {path}", "").replace(str(path), "the file")  # named once, in front
        if "cannot find a suitable reader" in reason:
            reason = "empty, text or not this format"
        what = {"nifti": "a NIfTI volume", "dicom": "a DICOM image", "picture": f"a {path.suffix[1:].upper() or 'picture'} "
                "image"}[kind]
        raise UsageError(f"{path}: cannot be read as {what} ({reason})") from None
    check_finite(image, path)
    return image


def check_finite(image: Any, path: Path) -> None:
    """Refuse an image holding NaN or infinite values, in one line naming ``path``: a network
    answers them with NaNs, and the argmax of NaNs is an empty segmentation. Values are checked
    as read (32-bit floats), so one too large for them counts as infinite."""
    values = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if not np.issubdtype(values.dtype, np.floating) or np.isfinite(values.sum(dtype=np.float64)):
        return  # a finite sum: no NaN and no infinity anywhere
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        share = f"all {values.size}" if bad == values.size else f"{bad} of {values.size}"
        raise UsageError(f"{path}: {share} voxels are NaN or infinite; expected an image of finite values")


class LoadChecked(MapTransform):
    """``LoadImaged`` with the reader chosen per file and read failures as one-line UsageErrors."""

    def __init__(self, keys: tuple[str, ...], allowed: tuple[str, ...] = ("nifti", "dicom", "picture"),
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.allowed = allowed

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_image(Path(d[key]), self.allowed)
        return d


@contextlib.contextmanager
def usage_errors_unwrapped() -> Iterator[None]:
    """Re-raise a UsageError that MONAI's transform machinery wrapped in other exceptions."""
    try:
        yield
    except UsageError:
        raise
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, UsageError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise


def input_name(raw: RawInput) -> str:
    """How results name an input: its path as given on the command line, else its label (an upload's file name)."""
    return str(raw.path) if raw.path is not None else raw.label


@contextlib.contextmanager
def input_path(raw: RawInput) -> Iterator[Path]:
    """A local path holding an input to predict (uploaded bytes are copied under their file name,
    whose suffix picks the reader); its errors are one line naming the input, not the copy."""
    with raw.local_path() as path:
        try:
            with usage_errors_unwrapped():
                yield path
        except UsageError as exc:
            if raw.path is not None and path == raw.path:
                raise
            raise UsageError(str(exc).replace(str(path), raw.label)) from None


def reference_files(paths: Sequence[str | Path], count: int) -> list[RawInput]:
    """Up to ``count`` of ``paths``, spread over them, as the uploads a client sends (bytes and name)."""
    step = max(1, len(paths) // max(1, count))
    return [RawInput(value=Path(p).read_bytes(), name=Path(p).name) for p in list(paths)[::step][:count]]
