"""The vision model builders: output shapes on every input size the data sets give, and
starting from a local weights file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dlguide import UsageError
from dlguide_vision import models
from dlguide_vision.classify import ImageClassificationConfig


@pytest.mark.parametrize("channels, size", [(1, 8), (1, 28), (3, 32)])
@pytest.mark.parametrize("build", [
    lambda c, s: models.cnn(10, c, s, channels=(8, 16), activation="tanh", hidden=16),
    lambda c, s: models.lenet5(10, c),
    lambda c, s: models.resnet18(10, c),
], ids=["cnn", "lenet5", "resnet18"])
def test_models_map_images_to_logits(build, channels, size):
    model = build(channels, size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, channels, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", ["cnn", "lenet5", "resnet18"])
def test_registered_builders_read_the_config_and_meta(name):
    config = ImageClassificationConfig(channels=[4, 8], activation="tanh", hidden=16)
    meta = {"classes": ["a", "b", "c"], "channels": 3, "image_size": 12, "mean": [0.5] * 3, "std": [0.2] * 3}
    model = getattr(models, f"build_{name}")(config, meta).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 12, 12)).shape == (2, 3)
    if name != "resnet18":
        assert any(isinstance(m, torch.nn.Tanh) for m in model.modules())


def test_cnn_depth_is_the_number_of_channel_entries():
    model = models.cnn(4, 1, 16, channels=(4, 8, 16), activation="sigmoid")
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16]
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in model) == 4  # three blocks and the hidden layer


def test_cnn_too_deep_for_the_image_says_how_deep_it_may_be():
    with pytest.raises(UsageError, match="at most 3 entries"):
        models.cnn(10, 1, 8, channels=(8, 8, 8, 8))


def test_resnet18_has_a_small_input_stem():
    model = models.resnet18(10, 1)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_load_pretrained_fills_matching_tensors_and_skips_the_rest(tmp_path):
    from torchvision.models import resnet18

    imagenet = resnet18(weights=None)  # the ImageNet layout: 7x7 stem, 1000 classes
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), path)
    model = models.resnet18(10, 3)
    skipped = models.load_pretrained(model, path)
    assert skipped == ["conv1.weight", "fc.bias", "fc.weight"]
    assert torch.equal(model.layer1[0].conv1.weight, imagenet.layer1[0].conv1.weight)

    st = tmp_path / "cnn.safetensors"
    source = models.cnn(10, 1, 8)
    save_file(source.state_dict(), str(st))
    target = models.cnn(10, 1, 8)
    assert models.load_pretrained(target, st) == []
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_load_pretrained_bad_files(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        models.load_pretrained(models.cnn(10, 1, 8), tmp_path / "none.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"garbage")
    with pytest.raises(UsageError, match=f"cannot read weights {junk}"):
        models.load_pretrained(models.cnn(10, 1, 8), junk)
    other = tmp_path / "other.pth"
    torch.save({"unrelated": torch.zeros(3)}, other)
    with pytest.raises(UsageError, match="no tensor"):
        models.load_pretrained(models.cnn(10, 1, 8), other)
