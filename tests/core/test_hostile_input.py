"""Hostile config input: alias bombs, huge values and odd files end in one short line, exit 2."""

from __future__ import annotations

import dataclasses

import pytest

from dlguide._config import option, read_config_file, resolve
from dlguide._errors import UsageError, quote
from dlguide._task import TrainConfig
from dlguide.testing import run_cli


@dataclasses.dataclass
class Section:
    flip: bool = option(False, "random horizontal flips")


@dataclasses.dataclass
class HostileConfig(TrainConfig):
    model: str = option("cnn", "architecture", choices=("cnn", "lenet5"))
    channels: list[int] = option([16, 32], "conv channels per block")
    augment: Section = option(Section(), "augmentation settings")


def shared_bomb(levels: int) -> list:
    """Nested lists sharing their parts, as YAML aliases load: 9**levels strings from a few objects."""
    value: list = ["x"] * 9
    for _ in range(levels - 1):
        value = [value] * 9
    return value


def yaml_bomb(key: str, levels: int) -> str:
    """A few hundred bytes of YAML whose value of ``key`` expands to 9**levels strings."""
    names = [f"l{i}" for i in range(levels)]
    items = [f"&{names[0]} [" + ",".join(['"x"'] * 9) + "]"]
    for prev, name in zip(names, names[1:]):
        items.append(f"&{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return f"{key}: [{','.join(items)}]\n"


def assert_one_short_line(message: str, limit: int = 500) -> None:
    assert "\n" not in message.strip()
    assert len(message) < limit, message[:300]


def test_quote_cuts_long_and_nested_values():
    assert quote("abc") == "'abc'"
    assert quote(3) == "3"
    long = quote("x" * 1_000_000)
    assert len(long) <= 80 and long.startswith("'xxx") and long.endswith("...")
    nested = quote(shared_bomb(8), limit=60)
    assert len(nested) <= 60 and nested.startswith("[[[")
    loop: list = []
    loop.append(loop)
    assert len(quote(loop)) <= 80
    assert "\n" not in quote("a\nb")
    assert len(quote(10**5000)) <= 80  # past the digits Python turns into text


@pytest.mark.parametrize("base", [
    pytest.param({"epochs": shared_bomb(6)}, id="int-key"),
    pytest.param({"lr": "9x" * 500_000}, id="float-key"),
    pytest.param({"model": "m" * 1_000_000}, id="choices"),
    pytest.param({"channels": [shared_bomb(6)]}, id="list-item"),
    pytest.param({"augment": shared_bomb(6)}, id="section"),
    pytest.param({"augment": {"flip": shared_bomb(6)}}, id="nested-key"),
    pytest.param({"k" * 1_000_000: 1}, id="unknown-key"),
    pytest.param({"device": shared_bomb(6)}, id="str-choices"),
])
def test_config_errors_quote_a_bounded_prefix_of_the_value(base):
    with pytest.raises(UsageError) as exc:
        resolve(HostileConfig, base=base)
    assert_one_short_line(str(exc.value))
    assert str(exc.value).startswith(("invalid value for", "unknown config key"))


@pytest.mark.parametrize("pair", [
    pytest.param("epochs=" + "x" * 1_000_000, id="long-value"),
    pytest.param("no-equals-sign" * 100_000, id="no-equals-sign"),
    pytest.param("augment=1", id="value-for-a-section"),
    pytest.param("augment.flip=" + "y" * 1_000_000, id="nested-long-value"),
    pytest.param("channels=" + yaml_bomb("x", 7).partition(": ")[2].strip(), id="list-alias-bomb"),
    pytest.param("channels=[1,2", id="unclosed-list"),
    pytest.param("channels=" + "[" * 5000 + "]" * 5000, id="deep-list"),
    pytest.param("channels=[1," + "9" * 5000 + "]", id="long-number"),
])
def test_set_overrides_are_bounded_one_line_usage_errors(pair):
    with pytest.raises(UsageError) as exc:
        resolve(HostileConfig, overrides=[pair])
    assert_one_short_line(str(exc.value))


def test_yaml_alias_bomb_under_the_cap_names_the_key_in_one_short_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml_bomb("epochs", 5))  # 59,049 strings: a value the cap lets through
    with pytest.raises(UsageError, match="invalid value for 'epochs'") as exc:
        resolve(HostileConfig, file=path)
    assert_one_short_line(str(exc.value))


@pytest.mark.parametrize("text", [
    pytest.param(yaml_bomb("epochs", 9), id="alias-bomb"),
    pytest.param(yaml_bomb("unknown", 9), id="alias-bomb-unknown-key"),
    pytest.param("epochs: &a [*a]\n", id="self-reference"),
    pytest.param("channels: [" + ", ".join(["1"] * 200_000) + "]\n", id="long-list"),
])
def test_config_file_expanding_past_the_cap_is_refused(tmp_path, text):
    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match="expands to more than") as exc:
        read_config_file(path)
    assert_one_short_line(str(exc.value))


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("deep.yaml", "epochs: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("deep.toml", "epochs = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("long.yaml", "epochs: " + "1" * 5000 + "\n", "too many digits"),
    ("long.toml", "epochs = " + "1" * 5000 + "\n", "too many digits"),
])
def test_unreadable_config_files_are_usage_errors(tmp_path, name, text, reason):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError, match=reason) as exc:
        read_config_file(path)
    assert_one_short_line(str(exc.value))


def test_config_file_that_is_not_text_is_a_usage_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00epochs")
    with pytest.raises(UsageError, match="cannot parse config file"):
        read_config_file(path)


def test_non_text_keys_are_named_as_unknown_keys(tmp_path):
    path = tmp_path / "keys.yaml"
    for text, shown in [("1: 2\n", "'1'"), ("true: 2\n", "'True'"), ("null: 2\n", "'None'")]:
        path.write_text(text)
        with pytest.raises(UsageError, match=f"unknown config key {shown}"):
            resolve(HostileConfig, file=path)


def test_cli_alias_bomb_config_fails_in_one_short_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml_bomb("epochs", 8))
    assert len(path.read_bytes()) < 400
    res = run_cli("run", "example.sine", "--config", path, "--out", tmp_path / "run", timeout=300)
    assert res.returncode == 2, res.stderr[:500]
    assert res.stderr.startswith("dlguide: error: ")
    assert_one_short_line(res.stderr)
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()
