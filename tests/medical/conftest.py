"""Fixtures of the medical tests: a runtime with only this plugin, a private data cache, and
small NIfTI volumes and DICOM series written by the tests themselves."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import dlguide_medical.plugin
from dlguide._plugins import load_runtime

# spacing 0.8 x 1.2 x 2.0 mm, rotated about z and shifted: a wrong axis order or a lost
# affine shows up as a mismatch rather than passing by coincidence
OBLIQUE = np.array([[0.0, -1.2, 0.0, 30.0], [0.8, 0.0, 0.0, -12.5], [0.0, 0.0, 2.0, 7.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="session", autouse=True)
def medical_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Generated data sets go to a private cache, never the user's."""
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def runtime():
    return load_runtime(strict=True, disable=(), extra={"medical": dlguide_medical.plugin}, use_entry_points=False)


def spheres(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with one bright sphere and its label."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = np.array(shape, dtype=float)[:, None, None, None] / 2 + rng.uniform(-2, 2, (3, 1, 1, 1))
    label = (((grid - centre) ** 2).sum(0) < (min(shape) / 4) ** 2).astype(np.uint8)
    return (label + rng.normal(0, 0.2, shape)).astype(np.float32), label


def write_msd_folder(folder: Path, cases: int = 3, shape: tuple[int, int, int] = (20, 20, 16)) -> Path:
    """A tiny Decathlon folder written with the plugin's own MONAI writer."""
    from dlguide_medical.msd import write_msd

    return write_msd(folder, "tiny", ["sphere"],
                     ((f"case{i}", *spheres(shape, i), OBLIQUE) for i in range(cases)), "test spheres")


def dicom_file(name: str) -> Path:
    spec = importlib.util.find_spec("pydicom")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "test_files" / name


def write_dicom_series(folder: Path, slices: int = 3) -> Path:
    """CT_small.dcm as a series of ``slices`` slices 5 mm apart, each a modified copy."""
    import pydicom

    folder.mkdir(parents=True)
    for i in range(slices):
        ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * i]
        ds.InstanceNumber = i + 1
        ds.SliceLocation = z + 5.0 * i
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i + 1}"
        ds.save_as(folder / f"slice{i:03d}.dcm")
    return folder


@pytest.fixture
def msd_folder(tmp_path: Path) -> Path:
    return write_msd_folder(tmp_path / "Task01_Tiny")
