"""The data sets of the medical tasks, registered as ``medical.<name>`` dataset loaders.

A loader is called as ``loader(config) -> Path`` with the config of the task that asks, and
returns a folder in that task's layout, which the task then reads and checks:

- medical.segment: a Medical Segmentation Decathlon folder (``dataset.json``, ``imagesTr/``,
  ``labelsTr/``; see ``msd.read_msd``);
- medical.classify: a folder with one subfolder of images per class (the MedNIST layout; see
  ``class_data.read_class_folder``).

A package adds a data set to a task by registering such a loader for it
(``registry.add_dataset("medical.mine", "pkg.mod:load", "...", tasks="medical.segment")``).
Both tasks call their embedded set ``synthetic``; the registry holds one loader per name, so
that loader asks the task's config to make its own set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlguide import UsageError
from dlguide_medical.sources import mni_brain_msd


def synthetic(config: Any) -> Path:
    """The asking task's embedded synthetic set, which its config's ``synthetic_data`` writes once
    into the cache: spheres for medical.segment, discs for medical.classify."""
    return config.synthetic_data()


def mni_brain(config: Any) -> Path:
    """The MNI152 template with grey/white matter labels, cut into ``config.mni_slabs`` slabs (medical.segment)."""
    return mni_brain_msd(config.mni_slabs)


def data_dir(config: Any) -> Path:
    """The user's own folder (``dataset=msd`` or ``dataset=folder``), which the config has checked is given."""
    folder: Path | None = config.data_dir
    assert folder is not None
    if not folder.exists():
        raise UsageError(f"data_dir not found: {folder}")
    return folder


