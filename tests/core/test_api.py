"""The core's seams: the public surface, runs that own their hooks, the registry as the
source of a task's choices, and the one inference path."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dlguide
from dlguide import RawInput, UsageError, hookimpl, predict_run, run_task
from dlguide._cli import main
from test_trainer import FAST

PUBLIC_MODULES = {"dlguide", "dlguide.hookspecs", "dlguide.testing"}


def imported_names(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for every import of dlguide in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dlguide":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names if alias.name.split(".")[0] == "dlguide"]
    return found


def test_first_party_plugins_import_only_the_public_surface(root):
    sources = [p for folder in ("plugins", "examples") for p in (root / folder).glob("*/src/**/*.py")]
    assert len(sources) > 30
    wrong = []
    for path in sources:
        for line, module, name in imported_names(path):
            if module not in PUBLIC_MODULES:
                wrong.append(f"{path.relative_to(root)}:{line} imports the private module {module}")
            elif module == "dlguide" and name not in dlguide.__all__:
                wrong.append(f"{path.relative_to(root)}:{line} imports {name!r}, which dlguide does not export")
    assert not wrong, "\n".join(wrong)


def test_the_check_catches_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from dlguide._trainer import Trainer\nfrom dlguide import Task, _plugins\n")
    assert [(m, n) for _, m, n in imported_names(bad)] == [("dlguide._trainer", "Trainer"), ("dlguide", "Task"),
                                                          ("dlguide", "_plugins")]


def test_every_public_name_resolves_and_import_dlguide_loads_no_torch():
    for name in dlguide.__all__:
        assert getattr(dlguide, name) is not None, name
    code = "import dlguide, sys; dlguide.Task; dlguide.Registry; dlguide.option; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    with pytest.raises(AttributeError, match="no attribute 'Trainr'"):
        dlguide.Trainr  # noqa: B018


class Recorder:
    """A run plugin that writes down every lifecycle event it hears, with the run's directory."""

    def __init__(self, nested_at_epoch=None, tmp=None, runtime=None):
        self.events, self.nested_at_epoch, self.tmp, self.runtime = [], nested_at_epoch, tmp, runtime
        self.inner = None

    @hookimpl
    def dlguide_run_start(self, trainer):
        self.events.append(("run_start", trainer.run_dir.path.name))

    @hookimpl
    def dlguide_epoch_end(self, trainer, epoch, metrics):
        self.events.append(("epoch_end", trainer.run_dir.path.name, epoch))
        if epoch == self.nested_at_epoch:
            self.inner = Recorder()
            run_task("example.sine", overrides=[*FAST, "epochs=2", "seed=5"], out=self.tmp / "inner",
                     runtime=self.runtime, progress="none", plugins={"inner-recorder": self.inner})

    @hookimpl
    def dlguide_run_end(self, trainer, metrics):
        self.events.append(("run_end", trainer.run_dir.path.name))


def test_a_run_inside_a_hook_is_isolated_from_the_outer_run(toy_runtime, tmp_path):
    sets = [*FAST, "epochs=3"]
    alone = run_task("example.sine", overrides=sets, out=tmp_path / "alone", runtime=toy_runtime, progress="none")
    outer = Recorder(nested_at_epoch=1, tmp=tmp_path, runtime=toy_runtime)
    res = run_task("example.sine", overrides=sets, out=tmp_path / "outer", runtime=toy_runtime, progress="none",
                   plugins={"outer-recorder": outer})
    assert outer.events == [("run_start", "outer"), ("epoch_end", "outer", 1), ("epoch_end", "outer", 2),
                            ("epoch_end", "outer", 3), ("run_end", "outer")]
    assert outer.inner.events == [("run_start", "inner"), ("epoch_end", "inner", 1), ("epoch_end", "inner", 2),
                                  ("run_end", "inner")]
    assert res.metrics == alone.metrics  # nor did its random numbers leak into the outer run
    assert not toy_runtime.pm.has_plugin("outer-recorder")  # run plugins live and die with their run
    rows = (tmp_path / "outer" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_tasks_get_lifecycle_methods_and_a_run_context(toy_runtime, tmp_path):
    res = run_task("toy.recording", overrides=[*FAST, "epochs=5"], out=tmp_path / "rec", runtime=toy_runtime,
                   progress="none")
    rows = [json.loads(r) for r in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # stop(reason) ended the run after the first epoch
    task = load_recording_task(toy_runtime, res.run_dir)
    assert type(task).calls == [("fit_start", 0, "rec", True), ("epoch_end", 1, round(rows[0]["train/loss"], 6))]
    assert task.run is None and task.run_dir == res.run_dir  # a loaded run has a directory, no run context


def load_recording_task(runtime, run_dir):
    from dlguide import load_run

    return load_run(run_dir, runtime=runtime)


def test_the_registry_gives_a_task_its_model_choices(toy_runtime, tmp_path, capsys):
    assert toy_runtime.registry.choices("model", "toy.choice") == ["narrow", "wide"]
    res = run_task("toy.choice", overrides=[*FAST, "epochs=1", "model=wide"], out=tmp_path / "wide",
                   runtime=toy_runtime, progress="none")
    from safetensors import safe_open

    with safe_open(str(res.run_dir / "model.safetensors"), "pt") as f:
        assert f.get_tensor("0.weight").shape == (64, 1)
    with pytest.raises(UsageError) as info:
        run_task("toy.choice", overrides=["model=wdie"], out=tmp_path / "bad", runtime=toy_runtime)
    assert str(info.value) == ("invalid value for 'model': 'wdie'; registered models: narrow, wide; "
                               "did you mean 'wide'?")
    assert not (tmp_path / "bad").exists()
    with dlguide._plugins.use_runtime(toy_runtime):
        assert main(["info", "toy.choice"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("model "))
    assert "(one of narrow, wide)" in line


def test_predict_batches_decoded_inputs_and_encodes_each(toy_runtime, tmp_path):
    res = run_task("toy.recording", overrides=[*FAST, "epochs=2", "batch_size=2"], out=tmp_path / "r",
                   runtime=toy_runtime, progress="none")
    before = type(load_recording_task(toy_runtime, res.run_dir)).predict_steps
    with dlguide._plugins.use_runtime(toy_runtime):
        task, rows = predict_run(res.run_dir, ["0.5", "1", "-1", RawInput(value=2.0, name="two"), "0"])
    assert type(task).predict_steps - before == 3  # five inputs in batches of two
    assert [r["input"] for r in rows] == [0.5, 1.0, -1.0, 2.0, 0.0]  # the core names the inputs: the numbers
    assert all(isinstance(r["y"], float) for r in rows)
    json.dumps(rows)  # JSON-safe
    with dlguide._plugins.use_runtime(toy_runtime), pytest.raises(UsageError, match="not 'abc'"):
        predict_run(res.run_dir, ["0.5", "abc"])


def test_raw_inputs_give_bytes_text_and_a_local_file(tmp_path):
    raw = RawInput(value=b"\x89PNG...", name="scan.nii.gz")
    with raw.local_path() as path:
        assert path.name == "scan.nii.gz" and path.read_bytes() == b"\x89PNG..."
    assert not path.exists()  # a temporary copy, removed afterwards
    local = tmp_path / "a.txt"
    local.write_text("hello")
    with RawInput(name="a.txt", path=local).local_path() as path:
        assert path == local
    assert RawInput(name="a.txt", path=local).data() == b"hello"
    assert RawInput(value="x" * 100).label.endswith("...") and len(RawInput(value="x" * 100).label) == 60
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        RawInput(value=b"\xff", name="t").text()


def test_predict_on_the_command_line_prints_lines_or_json(toy_runtime, tmp_path, capsys):
    res = run_task("example.sine", overrides=[*FAST, "epochs=1"], out=tmp_path / "s", runtime=toy_runtime,
                   progress="none")
    with dlguide._plugins.use_runtime(toy_runtime):
        assert main(["predict", str(res.run_dir), "0.5", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert rows[0]["input"] == 0.5 and list(rows[0]) == ["input", "y", "sin(x)"]
        assert main(["predict", str(res.run_dir), "0.5", "--out", str(tmp_path / "o")]) == 2
        assert "writes no files; drop --out" in capsys.readouterr().err


def test_split_batch_and_to_json():
    from dlguide._inference import split_batch, to_json

    parts = split_batch({"p": torch.arange(6).view(3, 2), "t": (torch.zeros(3), torch.ones(3))}, 3)
    assert to_json(parts[1]) == {"p": [2, 3], "t": [0.0, 1.0]}
    assert to_json(float("nan")) == "nan"
    with pytest.raises(ValueError, match="shape \\(2,\\) for a batch of 3"):
        split_batch(torch.zeros(2), 3)
