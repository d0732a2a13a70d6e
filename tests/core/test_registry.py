"""The registry: lazy targets, duplicate names, unknown names with close matches."""

import sys

import pytest

from dlguide._errors import UsageError
from dlguide._registry import Registry


def test_targets_are_imported_only_when_loaded():
    reg = Registry()
    reg.owner = "one"
    reg.add_task("demo.json", "json:dumps", "a task whose module is imported lazily")
    sys.modules.pop("wave", None)
    reg.add_model("demo.wave", "wave:open", "not imported at registration")
    assert "wave" not in sys.modules
    assert reg.load("model", "demo.wave") is __import__("wave").open
    entry = reg.get("task", "demo.json")
    assert (entry.owner, entry.summary, entry.target) == ("one", "a task whose module is imported lazily", "json:dumps")


def test_duplicate_names_name_both_owners():
    reg = Registry()
    reg.owner = "vision"
    reg.add_task("vision.classify", "a.b:C", "first")
    reg.owner = "copycat"
    with pytest.raises(UsageError, match=r"duplicate task 'vision.classify': registered by 'vision' \(a.b:C\) "
                                         r"and by 'copycat' \(x.y:Z\)"):
        reg.add_task("vision.classify", "x.y:Z", "second")
    reg.add_model("vision.classify", "x.y:Z", "a model may share a task's name")


def test_unknown_names_suggest_the_closest():
    reg = Registry()
    reg.add_task("vision.classify", "a.b:C", "classify images")
    reg.add_task("vision.gan", "a.b:G", "generate images")
    with pytest.raises(UsageError, match=r"unknown task 'vision.clasify'; did you mean 'vision.classify'\?"):
        reg.get("task", "vision.clasify")
    with pytest.raises(UsageError, match="unknown task 'zzz'; known tasks: vision.classify, vision.gan"):
        reg.get("task", "zzz")
    with pytest.raises(UsageError, match="no datasets are registered"):
        reg.get("dataset", "mnist")


@pytest.mark.parametrize(
    ("name", "target", "summary", "message"),
    [
        ("classify", "a.b:C", "x", "must look like '<domain>.<task>'"),
        ("vision.classify", "a.b.C", "x", "must look like 'package.module:Attr'"),
        ("vision.classify", "a.b:C", "two\nlines", "one non-empty line"),
        ("vision.classify", "a.b:C", " ", "one non-empty line"),
    ],
)
def test_malformed_registrations(name, target, summary, message):
    with pytest.raises(UsageError, match=message):
        Registry().add_task(name, target, summary)


def test_remove_owner_drops_a_plugins_entries():
    reg = Registry()
    reg.owner = "a"
    reg.add_task("a.t", "m:T", "x")
    reg.owner = "b"
    reg.add_task("b.t", "m:T", "x")
    reg.remove_owner("a")
    assert reg.names("task") == ["b.t"]
