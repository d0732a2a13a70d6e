"""Entry point of dlguide-medical. Imported by ``dlguide list``: registration only, no torch or MONAI."""

from dlguide import Registry, hookimpl


@hookimpl
def dlguide_register(registry: Registry) -> None:
    registry.add_task(
        "medical.segment",
        "dlguide_medical.segment:SegmentationTask",
        "3D segmentation with MONAI's U-Net or SegResNet (synthetic spheres, MNI152 brain, a Decathlon folder)",
        demo={},  # the defaults: synthetic spheres, test Dice about 0.95 in well under a minute on 2 cores
        config="dlguide_medical.config:SegmentationConfig",
        # dlguide plugin check: five small volumes, a two-level U-Net on small patches
        check={"synthetic_cases": 5, "synthetic_size": 32, "val_fraction": 0.2, "test_fraction": 0.2,
               "batch_size": 2, "samples_per_volume": 2, "patch_size": [16, 16, 16], "channels": [8, 16],
               "sw_batch_size": 8},
    )
    registry.add_task(
        "medical.classify",
        "dlguide_medical.classify:MedicalClassificationTask",
        "2D medical image classification with MONAI's DenseNet-121 (synthetic shapes, a MedNIST-style folder)",
        demo={},  # the defaults: three size classes of synthetic discs, about 25 s on 2 cores
        config="dlguide_medical.config:MedicalClassificationConfig",
        # dlguide plugin check: ten small images per class, one small training batch per epoch
        check={"synthetic_per_class": 10, "image_size": 32, "batch_size": 4, "limit_train_batches": 1},
    )
    for name, summary, task in (
        ("unet", "MONAI's residual 3D U-Net", "medical.segment"),
        ("segresnet", "MONAI's SegResNet (Myronenko 2018)", "medical.segment"),
        ("densenet121", "MONAI's 2D DenseNet-121", "medical.classify"),
    ):
        registry.add_model(f"medical.{name}", f"dlguide_medical.models:{name}", summary, tasks=task)
    # loaders return a folder in the asking task's layout (dlguide_medical.datasets)
    for name, attr, summary, tasks in (
        ("synthetic", "synthetic", "spheres (segment) or discs in three sizes (classify) made by MONAI",
         ("medical.segment", "medical.classify")),
        ("mni-brain", "mni_brain", "nilearn's MNI152 T1 template with grey/white matter labels, in slabs",
         ("medical.segment",)),
        ("msd", "data_dir", "a Medical Segmentation Decathlon folder (dataset.json, imagesTr/, labelsTr/)",
         ("medical.segment",)),
        ("folder", "data_dir", "one subfolder of PNG/JPEG/NIfTI/DICOM images per class", ("medical.classify",)),
    ):
        registry.add_dataset(f"medical.{name}", f"dlguide_medical.datasets:{attr}", summary, tasks=tasks)
