"""The command line, run as a person runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dlguide import hookimpl
from dlguide._cli import build_parser, main

FAST = ["--set", "samples=256", "batch_size=32", "hidden=8"]


def dlguide(*args, env=None, cwd=None, timeout=600):  # a bound against a hang, not a speed limit
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "dlguide", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def test_version_and_module_entry_point():
    res = dlguide("--version")
    assert res.returncode == 0 and res.stdout.strip() == "dlguide 0.1.0"


def test_list_help_and_info_do_not_import_torch():
    code = textwrap.dedent("""
        import sys, contextlib, io
        from dlguide._cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["list"])
            main(["list", "--json"])
            main(["plugins"])
            for task in ("vision.classify", "vision.gan", "nlp.classify", "recsys.rank", "medical.segment",
                         "medical.classify"):  # configs registered in torch-free modules
                assert main(["info", task]) == 0
            try:
                main(["--help"])
            except SystemExit:
                pass
        heavy = sorted(m for m in ("torch", "torchvision", "monai", "transformers") if m in sys.modules)
        print(heavy)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_list_json_and_plugins_json():
    listed = json.loads(dlguide("list", "--json").stdout)
    sine = next(e for e in listed if e["name"] == "example.sine")
    assert sine == {"kind": "task", "name": "example.sine", "plugin": "example", "demo": True,
                    "target": "dlguide_example.sine:SineRegression",
                    "summary": "fit a noisy sine wave with a small MLP (the plugin-writing example)"}
    plugins = {p["name"]: p for p in json.loads(dlguide("plugins", "--json").stdout)}
    assert plugins["example"] == {"name": "example", "distribution": "dlguide-example", "version": "0.1.0",
                                  "hooks": ["dlguide_register"], "status": "ok"}


def test_info_shows_keys_types_defaults_and_help():
    res = dlguide("info", "example.sine")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0].startswith("example.sine: fit a noisy sine wave")
    hidden = next(line for line in lines if line.startswith("hidden "))
    assert hidden.split()[:3] == ["hidden", "int", "32"] and "units in each" in hidden
    assert "demo settings: epochs=5" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "example.sinus"], "unknown task 'example.sinus'; did you mean 'example.sine'?"),
        (["run", "example.sine", "--set", "epoch=3"], "unknown config key 'epoch'; did you mean 'epochs'?"),
        (["run", "example.sine", "--set", "epochs=three"], "invalid value for 'epochs': 'three' is not an int"),
        (["run", "example.sine", "--config", "/no/such.yaml"], "config file not found: /no/such.yaml"),
        (["info", "nope.nope"], "unknown task 'nope.nope'"),
        (["resume", "/no/such/run"], "/no/such/run is not a dlguide run directory (no config.yaml)"),
        (["predict", "/no/such/run", "x"], "is not a dlguide run directory"),
        (["run"], "the following arguments are required: TASK (see 'dlguide run --help')"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(args, message, tmp_path):
    res = dlguide(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("dlguide: error: ")
    assert message in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_debug_shows_the_traceback(tmp_path):
    res = dlguide("--debug", "run", "example.sinus", cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" in res.stderr and "UsageError" in res.stderr


def test_run_eval_predict_through_the_cli(tmp_path):
    out = tmp_path / "run"
    res = dlguide("run", "example.sine", "--out", out, *FAST, "epochs=2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""
    final = json.loads((out / "metrics.json").read_text())
    ev = dlguide("eval", out, "--json")
    assert ev.returncode == 0, ev.stderr
    again = json.loads(ev.stdout)
    for key in ("test/loss", "test/r2", "test/mae"):
        assert again[key] == pytest.approx(final[key], abs=1e-6)
    pred = dlguide("predict", out, "0.5", "1.5")
    assert pred.returncode == 0, pred.stderr
    lines = pred.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("0.5  ->  y=") and "sin(x)=0.4794" in lines[0]
    bad = dlguide("predict", out, "half")
    assert bad.returncode == 2 and "example.sine predicts from numbers" in bad.stderr
    (tmp_path / "xs.txt").write_text("0.5\n\n2.0\n")
    from_file = dlguide("predict", out, "1.5", "--file", tmp_path / "xs.txt")
    assert from_file.returncode == 0, from_file.stderr
    assert [line.split()[0] for line in from_file.stdout.splitlines()] == ["1.5", "0.5", "2.0"]
    (tmp_path / "latin1.txt").write_bytes("0.5\n1,5 \xb0\n".encode("latin-1"))
    bad = dlguide("predict", out, "--file", tmp_path / "latin1.txt")
    assert bad.returncode == 2 and "latin1.txt is not UTF-8 text: invalid byte at offset 8" in bad.stderr
    bad = dlguide("predict", out, "0.5", "--out", tmp_path / "preds")
    assert bad.returncode == 2 and "writes no files; drop --out" in bad.stderr
    assert not (tmp_path / "preds").exists()


def test_config_file_then_set_and_resolved_config_saved(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 3\nlr: 0.5\nhidden: 4\n")
    out = tmp_path / "run"
    res = dlguide("run", "example.sine", "--config", tmp_path / "c.yaml", "--set", "lr=0.02", "samples=128",
                  "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    saved = (out / "config.yaml").read_text()
    assert "epochs: 3\n" in saved and "lr: 0.02\n" in saved and "hidden: 4\n" in saved


def test_log_lines_and_final_table_when_not_a_terminal(tmp_path):
    res = dlguide("run", "example.sine", "--out", tmp_path / "r", *FAST, "epochs=2")
    assert res.returncode == 0
    assert "epoch 1/2  train/loss " in res.stderr and "epoch 2/2  " in res.stderr
    assert "samples/s" in res.stderr and "\r" not in res.stderr
    assert "test/r2" in res.stderr and f"run directory: {tmp_path / 'r'}" in res.stderr


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dlguide", "run", "example.sine", "--out", str(out),
                             "--set", "samples=40000", "epochs=30", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the signal must come once training runs (its handler is installed by then): wait for the
    # first epoch's row however slow the machine is, with a bound only against a hung process
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and not (out / "metrics.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received" in err and f"dlguide resume {out}" in err and err.count("\n") == 1
    res = dlguide("resume", out, "--set", "epochs=2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "metrics.json").read_text())["test/r2"] > 0


def test_nan_exits_nonzero_with_one_line(tmp_path, monkeypatch, capsys, toy_runtime):
    code = main(["run", "toy.nan", "--out", str(tmp_path / "r"), *FAST, "nan_at_step=8", "checkpoint_interval=0",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "loss is nan at epoch 2, batch 1, step 7" in err and "last good checkpoint kept" in err


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys, toy_runtime):
    out = tmp_path / "r"
    assert main(["run", "example.sine", "--out", str(out), *FAST, "epochs=1", "--quiet"]) == 0
    (out / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    assert main(["resume", str(out), "--set", "epochs=2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a checkpoint (torch's zip format was expected; it starts with b'not '" in err


class CommandPlugin:
    @hookimpl
    def dlguide_add_commands(self, subparsers):
        p = subparsers.add_parser("hello", help="greet")
        p.add_argument("name")
        p.set_defaults(handler=lambda args: print(f"hello {args.name}, {len(args.runtime.plugins)} plugins") or 3)


def test_plugins_add_subcommands(dlguide_runtime, capsys):
    rt = dlguide_runtime(CommandPlugin())
    assert "hello" in build_parser(rt).format_help()
    assert main(["hello", "world"]) == 3
    assert capsys.readouterr().out == "hello world, 1 plugins\n"


def test_broken_plugin_warns_but_cli_works(tmp_path):
    info = tmp_path / "broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dlguide]\nbroken = broken_missing_module\n")
    env = {"PYTHONPATH": str(tmp_path)}
    res = dlguide("list", env=env)
    assert res.returncode == 0 and "example.sine" in res.stdout
    assert "plugin 'broken' did not load" in res.stderr
    plugins = dlguide("plugins", env=env)
    assert "broken" in plugins.stdout and "ModuleNotFoundError" in plugins.stdout
    strict = dlguide("list", env={**env, "DLGUIDE_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1 and "plugin 'broken' failed to load" in strict.stderr
    disabled = dlguide("plugins", "--json", env={**env, "DLGUIDE_DISABLE_PLUGINS": "broken"})
    assert {p["name"]: p["status"] for p in json.loads(disabled.stdout)}["broken"] == "disabled"


def test_demo_runs_each_plugins_demo_and_prints_a_table(tmp_path):
    res = dlguide("demo", "example", "--out", tmp_path / "demo", "--quiet")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].split() == ["task", "status", "time", "result", "run", "directory"]
    row = next(line for line in lines if line.startswith("example.sine"))
    assert " ok " in row and "test/mae" in row and str(tmp_path / "demo" / "example.sine") in row
    run_dir = next((tmp_path / "demo" / "example.sine").iterdir())
    assert "epochs: 5" in (run_dir / "config.yaml").read_text()
    page = tmp_path / "demo" / "report.html"
    assert lines[-1] == f"1 pictures in the run directories above; all of them on one page: {page}"
    assert "data:image/png;base64," in page.read_text()  # the learning curves, embedded
    unknown = dlguide("demo", "exampel")
    assert unknown.returncode == 2 and "no demo for plugin 'exampel'; did you mean 'example'?" in unknown.stderr


def test_a_task_written_after_set_values_is_still_the_task(tmp_path, capsys):
    """``--set`` takes every word after it; ``run --set k=v TASK`` means the task all the same."""
    out = tmp_path / "run"
    assert main(["run", "--set", "epochs=1", "samples=64", "example.sine", "--out", str(out), "--quiet"]) == 0
    assert (out / "metrics.json").is_file()
    assert main(["resume", "--set", "epochs=2", str(out), "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["run", "--set", "epochs=1"]) == 2
    assert "the following arguments are required: TASK" in capsys.readouterr().err


def test_a_task_of_a_disabled_plugin_names_the_plugin():
    res = dlguide("run", "example.sine", env={"DLGUIDE_DISABLE_PLUGINS": "example"})
    assert res.returncode == 2
    assert res.stderr.strip() == ("dlguide: error: task 'example.sine' is not available: its plugin 'example' is "
                                  "disabled by DLGUIDE_DISABLE_PLUGINS")


def test_info_json(capsys):
    assert main(["info", "example.sine", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == "example.sine" and info["plugin"] == "example"
    keys = {k["key"]: k for k in info["keys"]}
    assert keys["hidden"]["default"] == 32 and keys["hidden"]["type"] == "int"
    assert "adam" in keys["optimizer"]["choices"]


def test_hook_calls_can_be_traced_and_hooks_listed(tmp_path):
    res = dlguide("run", "example.sine", "--out", tmp_path / "run", "--quiet", "--set", "epochs=1", "samples=128",
                  env={"DLGUIDE_TRACE_HOOKS": "1"})
    assert res.returncode == 0, res.stderr
    traced = [line for line in res.stderr.splitlines() if line.startswith("dlguide: hook ")]
    assert any(line.startswith("dlguide: hook dlguide_epoch_end -> dlguide.metrics, dlguide.checkpoint (")
               for line in traced)
    assert all(line.endswith(" ms)") for line in traced)
    listed = json.loads(dlguide("plugins", "--hooks", "--json").stdout)
    assert "example" in listed["dlguide_register"] and listed["dlguide_run_start"] == []


def test_every_command_prints_its_help(capsys):
    parser = build_parser(__import__("dlguide._plugins", fromlist=["get_runtime"]).get_runtime())
    commands = sorted(parser._subparsers._group_actions[0].choices)
    assert {"run", "export", "serve", "tune", "lr-find", "cv", "compare", "report"} <= set(commands)
    for command in ["", *commands]:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"] if command else ["--help"])
        assert done.value.code == 0, command
    assert "95% interval" in capsys.readouterr().out
