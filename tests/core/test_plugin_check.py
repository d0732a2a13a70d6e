"""dlguide plugin check: the example plugin passes; plugins with one fault each fail with one
line naming it. The faulty plugins are project folders (pyproject.toml + src/PACKAGE) that are
not installed: the check reads their entry point from the pyproject and imports it from the
import path, as an author's checkout before ``pip install -e`` is."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from dlguide import UsageError
from dlguide._conformance import check_plugin, resolve
from dlguide._registry import Registry
from dlguide._rundir import RunDir
from dlguide.testing import run_cli

TASK_CHECKS = ("one batch", "exact resume", "predict", "export", "serve")


def write_project(tmp_path, package, plugin, **modules):
    """A plugin project ``tmp_path/package``: its entry point ``<domain> = "<package>.plugin"``."""
    domain = package.removeprefix("dlguide_")
    root = tmp_path / package
    src = root / "src" / package
    src.mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "{package.replace('_', '-')}"
        version = "0.1.0"

        [project.entry-points.dlguide]
        {domain} = "{package}.plugin"
        """))
    (src / "__init__.py").write_text("")
    for name, body in {"plugin": plugin, **modules}.items():
        (src / f"{name}.py").write_text(textwrap.dedent(body))
    return root


def failures(results):
    lines = [r.line() for r in results if r.status == "FAILED"]
    assert all("\n" not in line for line in lines)
    return lines


def check(root, monkeypatch, out=None):
    """``check_plugin(root)`` with the project's src/ importable (and no module of an earlier
    project of the same package name left imported)."""
    monkeypatch.syspath_prepend(str(root / "src"))
    for name in [m for m in sys.modules if m == root.name or m.startswith(f"{root.name}.")]:
        monkeypatch.delitem(sys.modules, name)
    return check_plugin(root, out=out)


def test_the_example_plugin_passes(tmp_path):
    results = check_plugin("example", out=tmp_path / "runs")
    assert not failures(results)
    assert [r.name for r in results] == ["entry point", "hooks", "registrations", "no torch at import",
                                         *(f"example.sine: {c}" for c in TASK_CHECKS)]
    assert results[0].detail.startswith("example = dlguide_example.plugin (dlguide-example ")
    assert (tmp_path / "runs" / "example.sine" / "uninterrupted" / "model.safetensors").is_file()  # --out keeps them


@pytest.mark.parametrize("hook, says", [
    ("dlguide_epoch_end(trainer, epoch, metrics, extra)",
     "Argument(s) {'extra'} are declared in the hookimpl but can not be found in the hookspec"),
    ("dlguide_epoch_ends(trainer, epoch, metrics)", "implements unknown hook 'dlguide_epoch_ends'"),
])
def test_a_wrong_hook_is_one_failed_line(tmp_path, monkeypatch, hook, says):
    root = write_project(tmp_path, "dlguide_badhook", f"""
        from dlguide import hookimpl
        from dlguide_example.plugin import dlguide_register  # registers example.sine

        @hookimpl
        def {hook}:
            pass
        """)
    results = check(root, monkeypatch)
    [line] = failures(results)
    assert line.startswith("FAILED  hooks: ") and says in line
    assert results[0].detail.endswith("dlguide-badhook is not installed: loaded from the import path; dlguide finds "
                                      f"it once installed (pip install -e {root})")
    assert results[-1].line() == ("skipped tasks: not run: the plugin cannot be registered until its hooks are "
                                  "fixed")


def test_a_plugin_module_that_imports_torch_fails_naming_the_chain(tmp_path, monkeypatch):
    root = write_project(tmp_path, "dlguide_torchy", """
        from dlguide import hookimpl
        from dlguide_torchy.models import build  # noqa: F401  (the mistake: torch at load time)

        @hookimpl
        def dlguide_register(registry):
            registry.add_model("torchy.net", "dlguide_torchy.models:build", "a linear layer")
        """, models="""
        import torch

        def build(config, meta):
            return torch.nn.Linear(1, 1)
        """)
    [line] = failures(check(root, monkeypatch))
    assert line.startswith("FAILED  no torch at import: importing dlguide_torchy.plugin imports torch "
                           "(dlguide_torchy.plugin -> dlguide_torchy.models -> torch); import it inside the functions")


SINE_PLUGIN = """
    from dlguide import hookimpl

    @hookimpl
    def dlguide_register(registry):
        registry.add_task("{domain}.sine", "{package}.task:{cls}", "the example's sine with a fault",
                          demo={{"samples": 256, "hidden": 8, "epochs": 7}}, check={{"limit_train_batches": 1}})
    """


def test_a_task_whose_resume_is_not_exact_fails_that_check_only(tmp_path, monkeypatch):
    root = write_project(tmp_path, "dlguide_drift", SINE_PLUGIN.format(domain="drift", package="dlguide_drift",
                                                                        cls="DriftingSine"), task="""
        import torch
        from torch import nn

        from dlguide_example.sine import SineRegression


        class DriftingSine(SineRegression):
            def on_fit_start(self):
                # the mistake: a generator of its own, which checkpoints do not hold, starts again on resume
                self.jitter = torch.Generator().manual_seed(self.config.seed)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return nn.functional.mse_loss(self.model(x), y + 0.1 * torch.randn(y.shape, generator=self.jitter))
        """)
    results = check(root, monkeypatch, out=tmp_path / "runs")
    [line] = failures(results)
    assert line.startswith("FAILED  drift.sine: exact resume: the resumed run's weights differ from an uninterrupted "
                           "run's (")
    # the demo's settings, the check's limits, the task's check settings, then two epochs on the CPU
    _, config = RunDir(tmp_path / "runs" / "drift.sine" / "uninterrupted").read_config()
    assert {k: config[k] for k in ("samples", "hidden", "limit_train_batches", "limit_eval_batches", "seed",
                                   "epochs", "device")} == {"samples": 256, "hidden": 8, "limit_train_batches": 1,
                                                            "limit_eval_batches": 1, "seed": 0, "epochs": 2,
                                                            "device": "cpu"}
    assert "a random generator or a counter of the task's own" in line
    assert {r.name for r in results if r.status == "ok"} >= {f"drift.sine: {c}" for c in ("predict", "export", "serve")}


def test_a_task_without_reference_inputs_is_told_what_to_implement(tmp_path, monkeypatch):
    root = write_project(tmp_path, "dlguide_noref", SINE_PLUGIN.format(domain="noref", package="dlguide_noref",
                                                                        cls="Sine"), task="""
        from dlguide import Task
        from dlguide_example.sine import SineRegression


        class Sine(SineRegression):
            reference_inputs = Task.reference_inputs  # the base class's: NotImplementedError
        """)
    results = check(root, monkeypatch)
    [line] = failures(results)
    assert line.startswith("FAILED  noref.sine: predict: implement Task.reference_inputs (raw inputs from the test "
                           "split) so that a reloaded run can be predicted, exported and served")
    assert [r.status for r in results[-2:]] == ["skipped", "skipped"]  # export and serve need the inputs


def test_the_command_prints_one_line_per_check_and_exits_1_on_a_failure(tmp_path):
    root = write_project(tmp_path, "dlguide_cli", """
        from dlguide import hookimpl

        @hookimpl
        def dlguide_run_start(trainer, extra):
            pass
        """)
    res = run_cli("plugin", "check", root, env={"PYTHONPATH": os.pathsep.join([str(root / "src"),
                                                                              os.environ.get("PYTHONPATH", "")])})
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("ok      entry point: cli = dlguide_cli.plugin (dlguide-cli 0.1.0); dlguide-cli is not "
                               "installed: loaded from the import path")
    assert lines[1].startswith("FAILED  hooks: PluginValidationError: Plugin 'dlguide_cli.plugin' for hook "
                               "'dlguide_run_start'; ")
    assert lines[-1].startswith("5 checks: 3 ok, 1 skipped, 1 failed")


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(UsageError, match="^unknown plugin 'exampel'; did you mean 'example'"):
        check_plugin("exampel")
    with pytest.raises(UsageError, match="holds no pyproject.toml"):
        check_plugin(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "nothing"\n')
    with pytest.raises(UsageError, match=r"declares no \[project.entry-points.dlguide\]"):
        check_plugin(tmp_path)
    res = run_cli("plugin", "check", "exampel")
    assert res.returncode == 2
    assert res.stderr.strip() == "dlguide: error: unknown plugin 'exampel'; did you mean 'example'?"


def test_check_settings_must_be_a_mapping():
    with pytest.raises(UsageError, match="^task 'x.y': check must map config keys to values, not list$"):
        Registry().add_task("x.y", "pkg.mod:Task", "a task", check=["epochs=1"])


def test_the_folder_of_an_installed_plugin_names_its_installed_entry_point(root):
    [source] = resolve(root / "examples" / "dlguide-example")
    assert (source.name, source.value, source.distribution, source.problem, source.note) == (
        "example", "dlguide_example.plugin", "dlguide-example", None, "")
