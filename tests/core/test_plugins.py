"""Plugin discovery: entry points one by one, broken-plugin isolation, strict mode, disable list."""

from __future__ import annotations

import sys
import textwrap

import pytest

from dlguide._errors import PluginError, UsageError
from dlguide._plugins import load_runtime

GOOD = """
from dlguide import hookimpl

@hookimpl
def dlguide_register(registry):
    registry.add_task("good.task", "good_mod:Task", "a task from a well-behaved plugin")

@hookimpl
def dlguide_epoch_end(trainer, epoch, metrics):
    pass
"""
FAILS_TO_REGISTER = """
from dlguide import hookimpl

@hookimpl
def dlguide_register(registry):
    registry.add_task("halfway.first", "halfway_mod:A", "registered before the failure")
    raise RuntimeError("registration exploded")
"""
TYPO_HOOK = """
from dlguide import hookimpl

@hookimpl
def dlguide_registr(registry):
    pass
"""
BAD_ARGS = """
from dlguide import hookimpl

@hookimpl
def dlguide_register(registry, extra_argument):
    pass
"""
DUPLICATE = """
from dlguide import hookimpl

@hookimpl
def dlguide_register(registry):
    registry.add_task("good.task", "dup_mod:Task", "claims a name that is taken")
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path where tests install fake distributions with entry points."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(dist: str, ep_name: str, module: str, source: str | None) -> None:
        info = tmp_path / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[dlguide]\n{ep_name} = {module}\n")
        if source is not None:
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        for name in [m for m in sys.modules if m == module]:
            del sys.modules[name]

    return install


def by_name(rt):
    return {p.name: p for p in rt.plugins}


def test_good_plugin_is_loaded_with_its_distribution_and_hooks(site):
    site("good-plugin", "good", "good_mod", GOOD)
    rt = load_runtime(strict=False, disable=())
    info = by_name(rt)["good"]
    assert (info.distribution, info.version, info.status) == ("good-plugin", "1.0", "ok")
    assert info.hooks == ["dlguide_epoch_end", "dlguide_register"]
    assert rt.registry.get("task", "good.task").owner == "good"


def test_broken_plugins_are_reported_and_never_stop_the_others(site):
    site("good-plugin", "good", "good_mod", GOOD)
    site("missing-plugin", "missing", "no_such_module_anywhere", None)
    site("halfway-plugin", "halfway", "halfway_mod", FAILS_TO_REGISTER)
    site("typo-plugin", "typo", "typo_mod", TYPO_HOOK)
    site("badargs-plugin", "badargs", "badargs_mod", BAD_ARGS)
    site("dup-plugin", "zdup", "dup_mod", DUPLICATE)
    rt = load_runtime(strict=False, disable=())
    infos = by_name(rt)
    assert infos["good"].status == "ok"
    assert infos["missing"].status.startswith("error: ModuleNotFoundError: No module named 'no_such_module_anywhere'")
    assert infos["halfway"].status == "error: RuntimeError: registration exploded"
    assert "unknown hook 'dlguide_registr'" in infos["typo"].status
    assert "extra_argument" in infos["badargs"].status
    assert "duplicate task 'good.task': registered by 'good'" in infos["zdup"].status
    # what failed half way is rolled back; the failing plugins' hooks are not called in runs
    names = rt.registry.names("task")
    assert "good.task" in names and "halfway.first" not in names
    assert rt.pm.get_plugin("halfway") is None and rt.pm.get_plugin("good") is not None


def test_strict_mode_turns_a_failure_into_an_error(site, monkeypatch):
    site("halfway-plugin", "halfway", "halfway_mod", FAILS_TO_REGISTER)
    with pytest.raises(PluginError, match="plugin 'halfway' failed to load: RuntimeError: registration exploded"):
        load_runtime(strict=True, disable=())
    monkeypatch.setenv("DLGUIDE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError):
        load_runtime(disable=())


def test_disable_list_skips_plugins_by_name(site, monkeypatch):
    site("good-plugin", "good", "good_mod", GOOD)
    site("halfway-plugin", "halfway", "halfway_mod", FAILS_TO_REGISTER)
    monkeypatch.setenv("DLGUIDE_DISABLE_PLUGINS", "halfway, good")
    rt = load_runtime(strict=True)
    assert {by_name(rt)[n].status for n in ("good", "halfway")} == {"disabled"}
    with pytest.raises(UsageError, match="unknown task 'good.task'"):
        rt.registry.get("task", "good.task")


def test_installed_plugins_load_cleanly_in_strict_mode():
    rt = load_runtime(strict=True, disable=())
    names = {p.name for p in rt.plugins}
    assert {"vision", "nlp", "recsys", "medical"} <= names
    assert all(p.status == "ok" for p in rt.plugins)


def test_check_hooks_fixture_validates_against_specs(dlguide_check_hooks, site):
    import toyplugin

    assert dlguide_check_hooks(toyplugin) == ["dlguide_register"]
    site("typo-plugin", "typo", "typo_mod", TYPO_HOOK)
    import typo_mod

    with pytest.raises(PluginError, match="unknown hook"):
        dlguide_check_hooks(typo_mod)


def test_runtime_fixture_isolates_plugins(dlguide_runtime):
    import toyplugin

    from dlguide._plugins import get_runtime

    rt = dlguide_runtime(toyplugin)
    assert get_runtime() is rt
    assert [p.name for p in rt.plugins] == ["toyplugin"]
    assert rt.registry.names("task") == ["toy.choice", "toy.counting", "toy.nan", "toy.recording", "toy.twoopt"]


def test_smoke_run_fixture_runs_one_tiny_step(dlguide_runtime, dlguide_smoke_run):
    dlguide_runtime(entry_points=("example",))
    result = dlguide_smoke_run("example.sine")
    rows = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and "test/r2" in result.metrics
