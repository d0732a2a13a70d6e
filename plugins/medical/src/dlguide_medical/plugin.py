"""Entry point of dlguide-medical. Imported by ``dlguide list``: registration only, no torch or MONAI."""

from dlguide import Registry, hookimpl


@hookimpl
def dlguide_register(registry: Registry) -> None:
    registry.add_task(
        "medical.segment",
        "dlguide_medical.segment:SegmentationTask",
        "3D segmentation with MONAI's U-Net or SegResNet (synthetic spheres, MNI152 brain, a Decathlon folder)",
        demo={},  # the defaults: synthetic spheres, test Dice about 0.95 in well under a minute on 2 cores
    )
    registry.add_task(
        "medical.classify",
        "dlguide_medical.classify:MedicalClassificationTask",
        "2D medical image classification with MONAI's DenseNet-121 (synthetic shapes, a MedNIST-style folder)",
        demo={},  # the defaults: three size classes of synthetic discs, about 25 s on 2 cores
    )
    for name, summary in (
        ("unet", "MONAI's residual 3D U-Net"),
        ("segresnet", "MONAI's SegResNet (Myronenko 2018)"),
        ("densenet121", "MONAI's 2D DenseNet-121"),
    ):
        registry.add_model(f"medical.{name}", f"dlguide_medical.models:{name}", summary)
    for name, attr, summary in (
        ("synthetic-3d", "sources:synthetic_msd", "spheres in noise by MONAI's create_test_image_3d, as an MSD folder"),
        ("mni-brain", "sources:mni_brain_msd", "nilearn's MNI152 T1 template with grey/white matter labels, in slabs"),
        ("msd", "msd:read_msd", "a Medical Segmentation Decathlon folder (dataset.json, imagesTr/, labelsTr/)"),
        ("synthetic-2d", "class_data:synthetic_folder", "shapes by MONAI's create_test_image_2d, one PNG folder per size"),
        ("imagefolder", "class_data:read_class_folder", "one subfolder of PNG/JPEG/NIfTI/DICOM images per class"),
    ):
        registry.add_dataset(f"medical.{name}", f"dlguide_medical.{attr}", summary)
