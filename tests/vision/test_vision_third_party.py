"""A model another package registers for vision.classify is trained, listed and checked by
name, with no change to the vision plugin: models are looked up in the registry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from torch import nn

import dlguide_vision.plugin
from dlguide import Registry, UsageError, hookimpl, load_run, run_task
from dlguide._cli import main


def build_tinynet(config: Any, meta: Mapping[str, Any]) -> nn.Module:
    """One linear layer over the pixels: built from the meta vision.classify documents."""
    side = int(meta["image_size"])
    return nn.Sequential(nn.Flatten(), nn.Linear(int(meta["channels"]) * side * side, len(meta["classes"])))


class TinyPlugin:
    """A third-party plugin: it registers vision.tinynet for vision.classify, nothing else."""

    __name__ = "tiny_vision"  # the plugin's name in the runtime

    @hookimpl
    def dlguide_register(self, registry: Registry) -> None:
        registry.add_model("vision.tinynet", f"{build_tinynet.__module__}:build_tinynet",
                           "a linear classifier of the pixels", tasks="vision.classify")


@pytest.fixture
def runtime_with_tinynet(dlguide_runtime):
    return dlguide_runtime(dlguide_vision.plugin, TinyPlugin())


def test_registered_model_is_a_choice_of_the_task_only(runtime_with_tinynet, capsys):
    registry = runtime_with_tinynet.registry
    assert registry.choices("model", "vision.classify") == ["cnn", "lenet5", "resnet18", "tinynet"]
    assert registry.choices("model", "vision.gan") == ["dcgan"]
    assert main(["info", "vision.classify"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("model ")]
    assert line.endswith("(one of cnn, lenet5, resnet18, tinynet)")


def test_registered_model_trains_by_name(runtime_with_tinynet, tmp_path):
    result = run_task("vision.classify", overrides=["model=tinynet", "epochs=2", "scheduler=none"],
                      out=tmp_path / "run", progress="none")
    assert result.metrics["test/accuracy"] > 0.8  # a linear model of digits; chance is 0.1
    task = load_run(result.run_dir)
    assert task.config.model == "tinynet" and isinstance(task.model, nn.Sequential)
    assert json.loads((result.run_dir / "task.json").read_text())["image_size"] == 8


def test_unknown_model_lists_the_registered_ones(runtime_with_tinynet, tmp_path):
    with pytest.raises(UsageError) as info:
        run_task("vision.classify", overrides=["model=nosuch"], out=tmp_path / "run", progress="none")
    message = str(info.value)
    assert message.startswith("invalid value for 'model': 'nosuch'; registered models: cnn, lenet5, resnet18, "
                              "tinynet")
    assert "\n" not in message and not (tmp_path / "run").exists()
