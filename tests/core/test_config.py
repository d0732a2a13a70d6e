"""Typed configs: merge order, type checks, nested dotted keys and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import pytest

from dlguide._config import check_fractions, check_held_out, describe, option, parse_overrides, resolve, to_dict
from dlguide._errors import UsageError
from dlguide._task import TrainConfig


@dataclasses.dataclass
class Augment:
    flip: bool = option(False, "random horizontal flips")
    degrees: float = option(0.0, "random rotation range")


@dataclasses.dataclass
class DemoConfig(TrainConfig):
    model: str = option("cnn", "architecture", choices=("cnn", "lenet5"))
    channels: list[int] = option([16, 32], "conv channels per block")
    augment: Augment = option(Augment(), "augmentation settings")
    weights: Optional[Path] = option(None, "initial weights")


def test_defaults_then_base_then_file_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 7\nlr: 0.5\naugment:\n  flip: true\n  degrees: 10\n")
    cfg = resolve(DemoConfig, base={"epochs": 3, "batch_size": 16}, file=tmp_path / "c.yaml",
                  overrides=["lr=0.25", "augment.degrees=15", "channels=8,16,32"])
    assert cfg.epochs == 7  # the file beats the base
    assert cfg.batch_size == 16  # the base beats the default
    assert cfg.lr == 0.25  # --set beats the file
    assert cfg.augment == Augment(flip=True, degrees=15.0)
    assert cfg.channels == [8, 16, 32]
    assert cfg.optimizer == "adam"


def test_toml_file_and_yaml_list_override(tmp_path):
    (tmp_path / "c.toml").write_text('optimizer = "sgd"\n[augment]\nflip = true\n')
    cfg = resolve(DemoConfig, file=tmp_path / "c.toml", overrides=["channels=[4, 8]", "weights=none"])
    assert cfg.optimizer == "sgd" and cfg.augment.flip and cfg.channels == [4, 8] and cfg.weights is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epochs=abc"], "invalid value for 'epochs': 'abc' is not an int"),
        (["lr=fast"], "invalid value for 'lr': 'fast' is not a number"),
        (["epoch=3"], "unknown config key 'epoch'; did you mean 'epochs'?"),
        (["augment.flp=true"], "unknown config key 'augment.flp'; did you mean 'flip'"),
        (["augment.flip=maybe"], "is not a boolean"),
        (["optimizer=adamm"], "expected one of sgd, momentum, nesterov, adam, adamw, rmsprop; did you mean 'adam'"),
        (["model=resnet"], "expected one of cnn, lenet5"),
        (["channels=a,b"], "invalid value for 'channels': 'a' is not an int"),
        (["epochs=0"], "expected an integer >= 1"),
        (["lr=-1"], "expected a finite number > 0"),
        (["lr=1e999"], "invalid value for 'lr': inf; expected a finite number > 0"),
        (["data_dir=/no/such/folder"], "data_dir not found: /no/such/folder"),
        (["noequals"], "expected key=value"),
    ],
)
def test_usage_errors_name_the_key_and_value(overrides, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("?", r"\?").replace("[", r"\[")):
        resolve(DemoConfig, overrides=overrides)


def test_file_errors(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        resolve(DemoConfig, file=tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    with pytest.raises(UsageError, match="cannot parse config file"):
        resolve(DemoConfig, file=tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        resolve(DemoConfig, file=tmp_path / "list.yaml")
    (tmp_path / "typed.yaml").write_text("epochs: 2.5\n")
    with pytest.raises(UsageError, match="invalid value for 'epochs': 2.5 is not an int"):
        resolve(DemoConfig, file=tmp_path / "typed.yaml")


def test_describe_and_round_trip():
    keys = {f.key: f for f in describe(DemoConfig)}
    assert keys["augment.flip"].type == "bool" and keys["augment.flip"].help == "random horizontal flips"
    assert keys["model"].choices == ("cnn", "lenet5")
    assert keys["weights"].type == "Path | None"
    cfg = resolve(DemoConfig, overrides=["augment.flip=yes", "weights=/tmp"])
    again = resolve(DemoConfig, base=to_dict(cfg))
    assert again == cfg


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["a.b=1", "a.c=x", "d=2=3"]) == {"a": {"b": "1", "c": "x"}, "d": "2=3"}
    with pytest.raises(UsageError, match="both as a value and a section"):
        parse_overrides(["a=1", "a.b=2"])


def test_monitor_mode_comes_from_the_task_not_from_metric_names():
    from dlguide import Task

    class Scored(Task):
        metric_modes = {"accuracy": "max", "hd95": "min"}

    def mode(*sets: str) -> str:
        return Scored(resolve(TrainConfig, overrides=list(sets)), "toy.scored").monitor_mode()

    assert mode("monitor=val/loss") == "min"  # a loss is minimised by every task
    assert mode("monitor=train/d_loss") == "min"
    assert mode("monitor=val/accuracy") == "max"
    assert mode("monitor=val/hd95") == "min"  # declared by the task: the core knows no domain's metrics
    assert mode("monitor=val/loss", "monitor_mode=max") == "max"
    with pytest.raises(UsageError, match="does not say whether 'distance' is better high or low; set monitor_mode"):
        mode("monitor=val/distance")


@dataclasses.dataclass
class Shares:
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    dropout: float = 0.0


@pytest.mark.parametrize("changes, message", [
    ({"dropout": 1.0}, r"^invalid value for 'dropout': 1.0; expected a number in \[0, 1\)$"),
    ({"dropout": -0.1}, r"'dropout': -0.1"),
    ({"test_fraction": 1.5}, r"^invalid value for 'test_fraction': 1.5; expected a number in \[0, 1\)$"),
    ({"val_fraction": 0.5, "test_fraction": 0.5},
     r"^val_fraction 0.5 and test_fraction 0.5 leave no training images; their sum must be below 1$"),
])
def test_fraction_checks_name_the_key(changes, message):
    check_fractions(Shares(), "dropout")
    check_held_out(Shares(), "training images")
    shares = dataclasses.replace(Shares(), **changes)
    with pytest.raises(UsageError, match=message):
        check_fractions(shares, "dropout")
        check_held_out(shares, "training images")
