"""The embedded segmentation data sets, written once into the cache as MSD folders.

``synthetic``: spheres of random size and brightness in noise, made by MONAI's
``create_test_image_3d``. ``mni-brain``: the MNI152 2009a T1 template that the ``nilearn``
package ships, with grey and white matter labels taken from its tissue probability maps, cut
into slabs from front to back so that whole slabs of the brain can be held out for testing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from monai.data.synthetic import create_test_image_3d

from dlguide import UsageError, package_file
from dlguide_medical.msd import cache_root, write_msd

SYNTHETIC_SEED = 0  # the data set is fixed; the run's seed varies the split and the training
MNI_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
MNI_CLASSES = ("grey_matter", "white_matter")
BRAIN_MARGIN = 4  # voxels of background kept around the brain's bounding box


def synthetic_names(classes: int) -> list[str]:
    """Label names of the synthetic set: the spheres' brightness bands, dimmest first."""
    return ["object"] if classes == 1 else [f"band{i}" for i in range(1, classes + 1)]


def synthetic_msd(cases: int, size: int, classes: int, noise: float) -> Path:
    """``cases`` volumes of ``size``^3 voxels at 1 mm with ``classes`` foreground labels."""
    if size < 24:
        raise UsageError(f"invalid value for 'synthetic_size': {size}; expected at least 24 voxels")
    if not 0 <= noise < float("inf"):  # NaN fails this too
        raise UsageError(f"invalid value for 'synthetic_noise': {noise}; expected a finite value >= 0")
    folder = cache_root() / f"synthetic3d-n{cases}-s{size}-c{classes}-noise{noise:g}"
    rad_max = max(4, size // 6)

    def volumes() -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        rs = np.random.RandomState(SYNTHETIC_SEED)
        for i in range(cases):
            image, label = create_test_image_3d(size, size, size, num_objs=max(3, size // 8), rad_max=rad_max,
                                                rad_min=max(2, rad_max // 3), noise_max=noise,
                                                num_seg_classes=classes, random_state=rs)
            yield f"synthetic_{i:03d}", image, label, np.eye(4)

    return write_msd(folder, "synthetic", synthetic_names(classes), volumes(),
                     "spheres in noise made by monai.data.synthetic.create_test_image_3d")


def mni_brain_msd(slabs: int) -> Path:
    """The MNI152 T1 template cut into ``slabs`` front-to-back slabs, each an MSD case."""
    import nibabel as nib

    data = package_file("nilearn", "datasets/data", "nilearn", purpose="dataset 'mni-brain' (the MNI152 template)",
                        install="pip install 'dlguide-medical[mni]'")
    files = {k: data / MNI_FILE.format(k) for k in ("t1", "gm", "wm")}
    if not all(f.is_file() for f in files.values()):
        raise UsageError(f"the installed nilearn lacks {files['t1'].name} in {data}; reinstall nilearn")
    folder = cache_root() / f"mni-brain-slabs{slabs}"
    if (folder / "dataset.json").is_file():
        return folder
    t1_file = nib.load(files["t1"])
    t1 = np.asarray(t1_file.dataobj, dtype=np.float32)
    gm, wm = (np.asarray(nib.load(files[k]).dataobj, dtype=np.float32) / 255.0 for k in ("gm", "wm"))
    # the most probable tissue per voxel: background (everything else), grey or white matter
    label = np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0).astype(np.uint8)
    lo, hi = _bounding_box(gm + wm > 0.1, t1.shape)
    t1, label = (a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] for a in (t1, label))
    affine = t1_file.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array(lo, dtype=float)
    bounds = np.linspace(0, t1.shape[1], slabs + 1).round().astype(int)  # axis 1 runs posterior to anterior

    def volumes() -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            slab_affine = affine.copy()
            slab_affine[:3, 3] += affine[:3, 1] * start
            yield f"mni152_slab{i:02d}", t1[:, start:stop], label[:, start:stop], slab_affine

    return write_msd(folder, "mni-brain", MNI_CLASSES, volumes(),
                     "MNI152 2009a symmetric T1 template (nilearn) with grey/white matter from its probability maps")


def _bounding_box(mask: np.ndarray, shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    where = np.argwhere(mask)
    lo = np.maximum(where.min(0) - BRAIN_MARGIN, 0).tolist()
    hi = np.minimum(where.max(0) + 1 + BRAIN_MARGIN, shape).tolist()
    return lo, hi
