"""``dlguide plugin new`` and ``dlguide plugin update``: a new plugin installed into a venv of
its own passes its own tests and shows in ``dlguide list``; a later template version merges
into a plugin its author edited, keeping the edits; bad names, folders and states are one-line
errors that change nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import dlguide
from dlguide._cli import main
from dlguide._scaffold import core_requirement, template_version
from test_api import PUBLIC_MODULES, imported_names
from test_docs import make_venv  # a venv that sees this environment's packages, installs stay in it

TEMPLATE = Path(dlguide.__file__).parent / "templates" / "plugin"
# what `plugin new tabular` writes
FILES = {".copier-answers.yml", ".gitignore", ".github/workflows/ci.yml", "README.md", "pyproject.toml",
         "src/dlguide_tabular/__init__.py", "src/dlguide_tabular/plugin.py", "src/dlguide_tabular/config.py",
         "src/dlguide_tabular/regress.py", "tests/test_regress.py"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A template cache of the test's own, and the shipped template."""
    folder = tmp_path / "template-cache"
    monkeypatch.setenv("DLGUIDE_TEMPLATE_CACHE", str(folder))
    monkeypatch.delenv("DLGUIDE_PLUGIN_TEMPLATE", raising=False)
    return folder


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


def new_plugin(folder: Path, *args: str) -> Path:
    assert main(["plugin", "new", "tabular", "--no-input", "--out", str(folder), *args]) == 0
    return folder


def committed_plugin(folder: Path) -> Path:
    new_plugin(folder)
    git("init", "-q", cwd=folder)
    git("add", "-A", cwd=folder)
    git("commit", "-qm", "dlguide plugin new", cwd=folder)
    return folder


def files_of(folder: Path) -> set[str]:
    """The files under ``folder`` (outside a git repository's own), relative to it."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(folder).parts}


@pytest.mark.slow
def test_a_new_plugin_installs_alone_and_passes_its_own_tests(cache, tmp_path, capsys):
    plugin = new_plugin(tmp_path / "dlguide-tabular")
    said = capsys.readouterr().out
    assert f"created dlguide-tabular in {plugin}: task tabular.regress, template {template_version(TEMPLATE)}" in said
    assert files_of(plugin) == FILES
    pyproject = (plugin / "pyproject.toml").read_text()
    assert 'name = "dlguide-tabular"' in pyproject
    assert f'"dlguide-core{core_requirement()}"' in pyproject
    assert '[project.entry-points.dlguide]\ntabular = "dlguide_tabular.plugin"' in pyproject
    wrong = [f"{path.name}:{line} {module} {name}" for path in plugin.rglob("*.py")
             for line, module, name in imported_names(path)
             if module not in PUBLIC_MODULES or (module == "dlguide" and name not in dlguide.__all__)]
    assert not wrong, f"the template imports dlguide's internals: {wrong}"

    python = make_venv(tmp_path / "venv")  # the plugin is installed there, never into this environment
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", "-e", str(plugin)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    # the plugin's pytest keeps its temporary folders under tmp_path: in the shared root, a new
    # session retires the oldest sessions' folders, this suite's own among them, while they are in use
    (tmp_path / "temproot").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DEBUG_TEMPROOT"] = str(tmp_path / "temproot")
    tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=plugin,
                           capture_output=True, text=True, timeout=900, env=env)
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-2000:]
    listed = subprocess.run([str(python), "-m", "dlguide", "list", "--kind", "task"], capture_output=True, text=True)
    assert listed.returncode == 0 and "tabular.regress" in listed.stdout and "[tabular]" in listed.stdout
    info = subprocess.run([str(python), "-m", "dlguide", "info", "tabular.regress"], capture_output=True, text=True)
    assert info.returncode == 0 and info.stdout.startswith("tabular.regress: "), info.stderr
    assert "features" in info.stdout
    # and the suite's own environment did not get the plugin
    assert "tabular" not in subprocess.run([sys.executable, "-m", "dlguide", "plugins"], capture_output=True,
                                           text=True).stdout


def test_domain_and_task_name_the_package_parts(cache, tmp_path):
    plugin = new_plugin(tmp_path / "p", "--task", "tab.fit_curve")
    answers = yaml.safe_load((plugin / ".copier-answers.yml").read_text())
    assert (answers["name"], answers["domain"], answers["task"]) == ("tabular", "tab", "tab.fit_curve")
    assert (plugin / "src/dlguide_tabular/fit_curve.py").is_file() and (plugin / "tests/test_fit_curve.py").is_file()
    registration = (plugin / "src/dlguide_tabular/plugin.py").read_text()
    assert '"dlguide_tabular.fit_curve:TabFitCurveTask"' in registration
    assert 'config="dlguide_tabular.config:TabFitCurveConfig"' in registration
    for path in plugin.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def test_update_merges_a_new_template_version_and_keeps_the_authors_edits(cache, tmp_path, monkeypatch, capsys):
    plugin = committed_plugin(tmp_path / "dlguide-tabular")
    old = template_version(TEMPLATE)
    answers = yaml.safe_load((plugin / ".copier-answers.yml").read_text())
    assert answers["_commit"] == old and Path(answers["_src_path"]) == cache.resolve()
    # the author's edits: one in a file the template changes next, one in a file it leaves alone
    task, readme = plugin / "src/dlguide_tabular/regress.py", plugin / "README.md"
    assert "nn.ReLU()" in task.read_text()
    task.write_text(task.read_text().replace("nn.ReLU()", "nn.GELU()"))
    readme.write_text(readme.read_text() + "\nMy own notes.\n")
    git("commit", "-qam", "my edits", cwd=plugin)

    # a later template: a function added to the task module, a new file, a new version
    newer = tmp_path / "template-v2"
    shutil.copytree(TEMPLATE, newer)
    config = newer / "copier.yml"
    new = f"{old}.post1"
    config.write_text(config.read_text().replace(f'_template_version: "{old}"', f'_template_version: "{new}"'))
    module = newer / "project/src/{{ package }}/{{ task_module }}.py.jinja"
    module.write_text(module.read_text() + "\n\ndef added_by_the_new_template() -> str:\n    return '{{ task }}'\n")
    (newer / "project/CHANGELOG.md").write_text("Made from the dlguide plugin template.\n")
    monkeypatch.setenv("DLGUIDE_PLUGIN_TEMPLATE", str(newer))
    capsys.readouterr()

    assert main(["plugin", "update", str(plugin)]) == 0
    assert f"from template {old} to {new}" in capsys.readouterr().out
    text = task.read_text()
    assert "def added_by_the_new_template() -> str:\n    return 'tabular.regress'" in text  # the template's change
    assert "nn.GELU()" in text and "nn.ReLU()" not in text  # the author's edit, kept
    assert readme.read_text().endswith("\nMy own notes.\n")
    assert (plugin / "CHANGELOG.md").is_file()
    assert yaml.safe_load((plugin / ".copier-answers.yml").read_text())["_commit"] == new
    assert "<<<<<<<" not in text
    assert set(git("tag", cwd=cache).split()) == {old, new}  # both versions stay: older plugins still update
    assert git("status", "--porcelain", cwd=cache) == ""  # copier renders a dirty template's changes too


def test_a_version_the_cache_lacks_is_refused_before_anything_changes(cache, tmp_path, capsys):
    plugin = committed_plugin(tmp_path / "p")
    answers = yaml.safe_load((plugin / ".copier-answers.yml").read_text())
    answers["_commit"] = "0.0.1"  # a version this machine's dlguide never recorded
    (plugin / ".copier-answers.yml").write_text(yaml.safe_dump(answers))
    git("commit", "-qam", "made by an older template", cwd=plugin)
    capsys.readouterr()
    assert main(["plugin", "update", str(plugin)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlguide: error: template version 0.0.1, which made") and err.count("\n") == 1
    assert "dlguide-core>=" in err and "is not in" in err
    assert git("status", "--porcelain", cwd=plugin) == ""


def test_a_changed_template_needs_a_new_version(cache, tmp_path, monkeypatch, capsys):
    new_plugin(tmp_path / "first")
    changed = tmp_path / "template"
    shutil.copytree(TEMPLATE, changed)
    (changed / "project/NOTES.md").write_text("changed, version kept\n")
    monkeypatch.setenv("DLGUIDE_PLUGIN_TEMPLATE", str(changed))
    capsys.readouterr()
    assert main(["plugin", "new", "tabular", "--no-input", "--out", str(tmp_path / "second")]) == 1
    err = capsys.readouterr().err
    assert "differs from its version" in err and "new _template_version" in err and err.count("\n") == 1
    assert not (tmp_path / "second").exists()


@pytest.mark.parametrize("args, message", [
    (["new", "Tabular!"], "invalid plugin name 'Tabular!'; expected lower-case letters"),
    (["new", "dlguide-tabular"], "plugin name 'dlguide-tabular': give the short name"),
    (["new", "tabular", "--task", "tabular"], "invalid task 'tabular'; expected <domain>.<name>"),
    (["new", "tabular", "--task", "tabular.Fit"], "invalid task 'tabular.Fit'"),
    (["new", "tabular", "--task", "tabular.config"], "invalid task 'tabular.config': the package has a config.py"),
    (["new", "tabular", "--domain", "tab", "--task", "other.fit"], "task 'other.fit' is not in the domain 'tab'"),
    (["new", "tabular", "--domain", "Tab"], "invalid domain 'Tab'"),
])
def test_bad_names_are_one_line_usage_errors(cache, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["plugin", *args, "--no-input"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"dlguide: error: {message}") and captured.err.count("\n") == 1, captured.err
    assert captured.out == "" and list(tmp_path.iterdir()) == []  # nothing written, not even the cache


def test_bad_folders_are_one_line_usage_errors(cache, tmp_path, monkeypatch, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    bare = new_plugin(tmp_path / "bare")  # no git repository yet
    capsys.readouterr()
    for args, message in [
        (["new", "tabular", "--no-input", "--out", str(taken)], f"{taken} exists and is not an empty folder"),
        (["update", str(taken)], f"{taken} has no .copier-answers.yml"),
        (["update", str(tmp_path / "missing")], "plugin folder not found"),
        (["update", str(bare)], f"{bare} is not in a git repository"),
    ]:
        assert main(["plugin", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"dlguide: error: {message}") and err.count("\n") == 1, err
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]
    monkeypatch.setenv("DLGUIDE_TEMPLATE_CACHE", str(taken))  # the cache's working tree is rewritten: not this one
    assert main(["plugin", "new", "tabular", "--no-input", "--out", str(tmp_path / "other")]) == 2
    assert f"{taken} is not empty and not dlguide's repository of plugin templates" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]
    monkeypatch.setenv("DLGUIDE_TEMPLATE_CACHE", str(cache))
    committed_plugin(tmp_path / "dirty")
    (tmp_path / "dirty/README.md").write_text("edited, not committed\n")
    assert main(["plugin", "update", str(tmp_path / "dirty")]) == 2
    assert "has uncommitted changes (1 file): commit or stash them first" in capsys.readouterr().err
    assert (tmp_path / "dirty/README.md").read_text() == "edited, not committed\n"


def test_the_core_wheel_ships_the_whole_template(tmp_path):
    import zipfile

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(root / "core")], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("dlguide_core-*.whl")
    shipped = {n.removeprefix("dlguide/templates/plugin/") for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("dlguide/templates/plugin/")}
    assert shipped == files_of(TEMPLATE)
    assert {"copier.yml", "project/.gitignore", "project/.github/workflows/ci.yml"} <= shipped  # dotfiles too


def test_the_compatible_core_range():
    assert core_requirement("0.1.0") == ">=0.1,<0.2"
    assert core_requirement("0.3.2") == ">=0.3,<0.4"
    assert core_requirement("1.4.2") == ">=1.4,<2"
    assert core_requirement("2.0.0.dev3") == ">=2.0.0.dev3,<3"
