"""Plugins that fail in unusual ways, and names claimed by plugins that do not own their domain.

A plugin that exits on import or whose ``dlguide_add_commands`` raises is reported and skipped;
a name ``<domain>.<x>`` belongs to the plugin named ``<domain>``, whatever the load order.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

import dlguide_vision.plugin
from dlguide import hookimpl
from dlguide._cli import build_parser, main
from dlguide._errors import PluginError
from dlguide._plugins import load_runtime, use_runtime
from dlguide.testing import run_cli

EXITS_ON_IMPORT = """
import sys

sys.exit(3)
"""
EXITS_IN_REGISTER = """
import sys

from dlguide import hookimpl

@hookimpl
def dlguide_register(registry):
    registry.add_task("leaving.task", "leaving_mod:Task", "registered before the exit")
    sys.exit(4)
"""
GOOD = """
from dlguide import hookimpl

@hookimpl
def dlguide_register(registry):
    registry.add_task("fine.task", "fine_mod:Task", "a task from a well-behaved plugin")
"""
COMMANDS_OK = """
from dlguide import hookimpl

@hookimpl
def dlguide_register(registry):
    registry.add_task("cmdok.task", "cmd_ok_mod:Task", "a task of the plugin whose commands work")

@hookimpl
def dlguide_add_commands(subparsers):
    p = subparsers.add_parser("hello", help="greet")
    p.add_argument("name")
    p.set_defaults(handler=lambda args: print(f"hello {args.name}") or 0)
"""
COMMANDS_RAISE = """
from dlguide import hookimpl

@hookimpl
def dlguide_register(registry):
    registry.add_task("cmdbad.task", "cmd_bad_mod:Task", "a task of the plugin whose commands fail")

@hookimpl
def dlguide_add_commands(subparsers):
    subparsers.add_parser("half", help="added before the failure")
    raise RuntimeError("commands exploded")
"""
SQUATTER = """
from dlguide import hookimpl

@hookimpl
def dlguide_register(registry):
    registry.add_task("vision.classify", "squat_mod:Task", "not the vision plugin's task")
"""


def write_modules(tmp_path, **modules: str) -> dict[str, str]:
    """Write plugin modules into ``tmp_path``; the environment that loads them (``DLGUIDE_PLUGINS``)."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    return {"PYTHONPATH": str(tmp_path), "DLGUIDE_PLUGINS": ",".join(modules)}


@pytest.fixture
def env_plugins(tmp_path, monkeypatch):
    """Make plugin modules importable and name them in ``DLGUIDE_PLUGINS`` for this process."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(**modules: str) -> None:
        env = write_modules(tmp_path, **modules)
        monkeypatch.setenv("DLGUIDE_PLUGINS", env["DLGUIDE_PLUGINS"])
        for name in modules:
            sys.modules.pop(name, None)

    return install


def by_name(plugins) -> dict[str, object]:
    return {p.name: p for p in plugins}


def plugin(name: str, register) -> object:
    """A plugin object named ``name`` whose ``dlguide_register`` is ``register``."""
    return type(name, (), {"__name__": name, "dlguide_register": staticmethod(hookimpl(register))})()


# a plugin that exits


def test_plugin_that_exits_on_import_or_in_register_is_reported_and_skipped(env_plugins):
    env_plugins(exits_mod=EXITS_ON_IMPORT, leaving_mod=EXITS_IN_REGISTER, fine_mod=GOOD)
    rt = load_runtime(strict=False, disable=())
    infos = by_name(rt.plugins)
    assert infos["exits_mod"].status == "error: SystemExit: 3"
    assert infos["leaving_mod"].status == "error: SystemExit: 4"
    assert infos["fine_mod"].status == "ok"
    names = rt.registry.names("task")
    assert "fine.task" in names and "leaving.task" not in names and "vision.classify" in names
    assert rt.pm.get_plugin("leaving_mod") is None
    with pytest.raises(PluginError, match=r"^plugin 'exits_mod' failed to load: SystemExit: 3$"):
        load_runtime(strict=True, disable=())


def test_cli_survives_a_plugin_that_exits_on_import(tmp_path):
    env = write_modules(tmp_path, exits_mod=EXITS_ON_IMPORT, fine_mod=GOOD)
    listed = run_cli("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "fine.task" in listed.stdout and "vision.classify" in listed.stdout
    assert "plugin 'exits_mod' did not load (error: SystemExit: 3)" in listed.stderr
    plugins = run_cli("plugins", "--json", env=env)
    assert plugins.returncode == 0
    assert by_name_json(plugins.stdout)["exits_mod"] == "error: SystemExit: 3"
    strict = run_cli("list", env={**env, "DLGUIDE_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1
    assert strict.stderr == "dlguide: error: plugin 'exits_mod' failed to load: SystemExit: 3\n"


def by_name_json(stdout: str) -> dict[str, str]:
    return {p["name"]: p["status"] for p in json.loads(stdout)}


# a plugin whose dlguide_add_commands raises


class CommandsOk:
    __name__ = "commands_ok"

    @hookimpl
    def dlguide_add_commands(self, subparsers):
        p = subparsers.add_parser("hello", help="greet")
        p.add_argument("name")
        p.set_defaults(handler=lambda args: print(f"hello {args.name}") or 0)


class CommandsRaise:
    __name__ = "commands_raise"

    @hookimpl
    def dlguide_register(self, registry):
        registry.add_task("cmdbad.task", "cmd_bad_mod:Task", "a task of the plugin whose commands fail")

    @hookimpl
    def dlguide_add_commands(self, subparsers):
        subparsers.add_parser("half", help="added before the failure")
        raise RuntimeError("commands exploded")


@pytest.mark.parametrize("order", [(CommandsOk, CommandsRaise), (CommandsRaise, CommandsOk)])
def test_raising_add_commands_is_reported_and_the_other_commands_stay(order, capsys):
    plugins = [cls() for cls in order]
    rt = load_runtime(strict=False, disable=(), extra={p.__name__: p for p in plugins}, use_entry_points=False)
    with use_runtime(rt):
        text = build_parser(rt).format_help()
        assert "hello" in text and "half" not in text
        infos = by_name(rt.plugins)
        assert infos["commands_raise"].status == "error: RuntimeError: commands exploded (in dlguide_add_commands)"
        assert infos["commands_ok"].status == "ok"
        assert rt.pm.get_plugin("commands_raise") is None and "cmdbad.task" not in rt.registry.names("task")
        assert main(["hello", "world"]) == 0
        assert main(["half"]) == 2
    out, err = capsys.readouterr()
    assert out == "hello world\n"
    assert "plugin 'commands_raise' did not load" in err and "invalid choice: 'half'" in err


def test_raising_add_commands_is_an_error_in_strict_mode(capsys):
    rt = load_runtime(strict=True, disable=(), extra={"commands_raise": CommandsRaise()}, use_entry_points=False)
    with pytest.raises(PluginError, match=r"^plugin 'commands_raise' failed to add its commands: "
                                          r"RuntimeError: commands exploded$"):
        build_parser(rt)


def test_cli_survives_a_plugin_whose_add_commands_raises(tmp_path):
    env = write_modules(tmp_path, cmd_ok_mod=COMMANDS_OK, cmd_bad_mod=COMMANDS_RAISE)
    listed = run_cli("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "cmdok.task" in listed.stdout and "cmdbad.task" not in listed.stdout
    assert "plugin 'cmd_bad_mod' did not load" in listed.stderr
    plugins = run_cli("plugins", "--json", env=env)
    assert plugins.returncode == 0, plugins.stderr
    statuses = by_name_json(plugins.stdout)
    assert statuses["cmd_bad_mod"] == "error: RuntimeError: commands exploded (in dlguide_add_commands)"
    assert statuses["cmd_ok_mod"] == "ok"
    hello = run_cli("hello", "world", env=env)
    assert (hello.returncode, hello.stdout) == (0, "hello world\n")
    run = run_cli("run", "nosuch.task", env=env)
    assert run.returncode == 2 and "unknown task 'nosuch.task'" in run.stderr
    strict = run_cli("list", env={**env, "DLGUIDE_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1
    assert strict.stderr == ("dlguide: error: plugin 'cmd_bad_mod' failed to add its commands: "
                             "RuntimeError: commands exploded\n")


# who owns a name


def squat_classify(registry):
    registry.add_task("vision.classify", "squat_mod:Task", "not the vision plugin's task")


@pytest.mark.parametrize("squatter_first", [True, False])
def test_the_domain_owner_keeps_its_names_whatever_the_load_order(squatter_first):
    plugins = {"aaa_squatter": plugin("aaa_squatter", squat_classify), "vision": dlguide_vision.plugin}
    if not squatter_first:
        plugins = dict(reversed(plugins.items()))
    rt = load_runtime(strict=False, disable=(), extra=plugins, use_entry_points=False)
    entry = rt.registry.get("task", "vision.classify")
    assert (entry.owner, entry.target) == ("vision", "dlguide_vision.classify:ImageClassificationTask")
    infos = by_name(rt.plugins)
    assert infos["vision"].status == "ok"
    status = infos["aaa_squatter"].status
    assert status.startswith("error: UsageError: duplicate task 'vision.classify': registered by 'vision' ")
    assert "belongs to 'vision'" in status
    assert rt.pm.get_plugin("aaa_squatter") is None
    with pytest.raises(PluginError, match=r"plugin 'aaa_squatter' failed to load: .*'vision.classify'.*'vision'"):
        load_runtime(strict=True, disable=(), extra=plugins, use_entry_points=False)


def test_only_the_owner_registers_tasks_in_its_domain_while_others_may_add_models():
    def new_task(registry):
        registry.add_task("vision.segment", "squat_mod:Task", "a task in another plugin's domain")

    def new_model(registry):
        registry.add_model("vision.tinynet", "squat_mod:build", "a model for the owner's task",
                           tasks="vision.classify")

    plugins = {"aaa_task": plugin("aaa_task", new_task), "aaa_model": plugin("aaa_model", new_model),
               "vision": dlguide_vision.plugin}
    rt = load_runtime(strict=False, disable=(), extra=plugins, use_entry_points=False)
    infos = by_name(rt.plugins)
    assert infos["aaa_task"].status == ("error: UsageError: task 'vision.segment' belongs to plugin 'vision', "
                                        "the plugin named after its domain; 'aaa_task' may not register "
                                        "tasks in the 'vision' domain")
    assert infos["aaa_model"].status == "ok"
    assert "vision.segment" not in rt.registry.names("task")
    assert "tinynet" in rt.registry.choices("model", "vision.classify")
    # with no plugin named 'vision' installed, the domain is free
    rt = load_runtime(strict=True, disable=(), extra={"aaa_task": plugin("aaa_task", new_task)},
                      use_entry_points=False)
    assert rt.registry.get("task", "vision.segment").owner == "aaa_task"


@pytest.mark.parametrize("reverse", [False, True])
def test_a_name_two_non_owners_register_is_refused_for_both(reverse):
    def first(registry):
        registry.add_task("shared.task", "first_mod:Task", "one claim")
        registry.add_task("first.own", "first_mod:Own", "a name nobody else wants")

    def second(registry):
        registry.add_task("shared.task", "second_mod:Task", "another claim")

    def bystander(registry):
        registry.add_task("bystander.task", "bystander_mod:Task", "unrelated")

    plugins = {"first": plugin("first", first), "second": plugin("second", second),
               "bystander": plugin("bystander", bystander)}
    if reverse:
        plugins = dict(reversed(plugins.items()))
    rt = load_runtime(strict=False, disable=(), extra=plugins, use_entry_points=False)
    infos = by_name(rt.plugins)
    expected = ("error: UsageError: duplicate task 'shared.task': registered by 'first' (first_mod:Task) and "
                "'second' (second_mod:Task), none of them the plugin named 'shared'; refused for all")
    assert infos["first"].status == infos["second"].status == expected
    assert infos["bystander"].status == "ok"
    assert rt.registry.names("task") == ["bystander.task"]
    assert rt.pm.get_plugin("first") is None and rt.pm.get_plugin("second") is None


def test_cli_squatter_loading_first_does_not_take_the_owners_task(tmp_path):
    info = tmp_path / "squatter-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: squatter\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dlguide]\naaa = squat_mod\n")  # sorts before 'vision'
    (tmp_path / "squat_mod.py").write_text(textwrap.dedent(SQUATTER))
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_cli("list", "--json", "--kind", "task", env=env)
    assert listed.returncode == 0, listed.stderr
    owners = {e["name"]: (e["plugin"], e["target"]) for e in json.loads(listed.stdout)}
    assert owners["vision.classify"] == ("vision", "dlguide_vision.classify:ImageClassificationTask")
    assert "plugin 'aaa' did not load" in listed.stderr
    plugins = run_cli("plugins", "--json", env=env)
    status = by_name_json(plugins.stdout)["aaa"]
    assert "'vision.classify'" in status and "belongs to 'vision'" in status
