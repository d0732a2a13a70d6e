"""``dlguide tune`` and ``dlguide lr-find`` on example.sine: real Optuna studies in real SQLite
files (and a real PostgreSQL server), each trial an ordinary run directory.

One small study (six trials, random sampler, median pruner after one trial) is made once
and read by several tests; the slow tests start processes of their own. No test asserts on
a duration: waits are bounded loops on files the processes write.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from dlguide._cli import main

SMALL = ["samples=256", "epochs=3"]
SPACE = """\
lr: {loguniform: [1e-6, 3e-2]}
hidden: {int: [4, 16], step: 4}
dropout: {uniform: [0.0, 0.2]}
optimizer: {choice: [adam, rmsprop]}
"""
# random draws, pruned from epoch 2 once one trial completed: low rates fall behind and are pruned
STUDY = ["--sampler", "random", "--pruner", "median", "--startup-trials", "1", "--seed", "1"]
needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                  reason="optuna is not installed: pip install 'dlguide-core[tune]'")


def cli(*args: object) -> tuple[int, str, str]:
    """``dlguide ARGS`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def dlguide(*args: object) -> subprocess.Popen:
    """``dlguide ARGS`` as a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "dlguide", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:  # a bound against a hang
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def trials_of(study: str, storage: str) -> list:
    import optuna

    from dlguide._tune import open_storage  # the driver the command picks (psycopg 3 or 2)

    return optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The six-trial study, with what the command printed and study.json as it first wrote it."""
    pytest.importorskip("optuna")
    root = tmp_path_factory.mktemp("tune")
    (root / "space.yaml").write_text(SPACE)
    out = root / "study"
    code, stdout, stderr = cli("tune", "example.sine", "--space", root / "space.yaml", "--trials", 6, *STUDY,
                               "--out", out, "--set", *SMALL)
    assert code == 0, stderr
    return {"root": root, "out": out, "stdout": stdout, "stderr": stderr,
            "summary": json.loads((out / "study.json").read_text())}


@needs_optuna
def test_a_study_writes_trial_runs_a_table_best_yaml_pictures_and_study_json(study, tmp_path):
    out, summary = study["out"], study["summary"]
    rows = summary["trial_rows"]
    assert [r["number"] for r in rows] == list(range(6))
    for row in rows:  # every trial is an ordinary run directory
        assert Path(row["run_dir"]) == (out / f"trial_{row['number']:04d}").resolve()
        assert (out / f"trial_{row['number']:04d}" / "config.yaml").is_file()
    table = study["stdout"].splitlines()
    assert table[0].split()[:4] == ["trial", "state", "val/loss", "epochs"]
    assert [line.split()[0] for line in table[1:7]] == [str(i) for i in range(6)]
    assert "lr=" in table[1] and "optimizer=" in table[1]
    assert len(study["stderr"].strip().splitlines()) == 6  # one line per trial as it ends

    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = min(complete, key=lambda r: r["value"])
    assert summary["best"]["number"] == best["number"] and summary["direction"] == "minimize"
    assert summary["trials"] == 6 and summary["epochs_total"] == sum(r["epochs"] for r in rows)
    assert set(summary["param_importances"]) == {"lr", "hidden", "dropout", "optimizer"}
    for picture in ("optimization_history.png", "param_importances.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # best.yaml: the best run's resolved config, which 'dlguide run --config' takes as it is
    saved = yaml.safe_load((out / f"trial_{best['number']:04d}" / "config.yaml").read_text())
    config = yaml.safe_load((out / "best.yaml").read_text())
    assert config == {k: v for k, v in saved.items() if k != "task"}
    assert config["lr"] == best["params"]["lr"] and config["samples"] == 256
    code, _, stderr = cli("run", "example.sine", "--config", out / "best.yaml", "--out", tmp_path / "again", "--quiet")
    assert code == 0, stderr
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["val/loss"] == pytest.approx(best["value"])


@needs_optuna
def test_a_pruned_trial_is_pruned_in_optuna_and_its_run_stopped_cleanly(study):
    out = study["out"]
    trials = trials_of("space", f"sqlite:///{out / 'study.db'}")
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and any(t.state.name == "COMPLETE" for t in trials)
    for trial in pruned:
        run = out / f"trial_{trial.number:04d}"
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [e["epoch"] for e in epochs] == [1, 2]  # judged from epoch 2, stopped there: not 3
        assert max(trial.intermediate_values) == 2
        metrics = json.loads((run / "metrics.json").read_text())  # finished as early stopping finishes
        assert {"best_epoch", "val/loss", "test/loss"} <= set(metrics)
        for name in ("model.safetensors", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
            assert (run / name).is_file()
    rows = {r["number"]: r for r in study["summary"]["trial_rows"]}
    assert all(rows[t.number]["state"] == "PRUNED" and rows[t.number]["epochs"] == 2 for t in pruned)


@needs_optuna
def test_rerunning_the_command_continues_the_study(study):
    out = study["out"]
    code, stdout, stderr = cli("tune", "example.sine", "--space", study["root"] / "space.yaml", "--trials", 2, *STUDY,
                               "--out", out, "--set", *SMALL)
    assert code == 0, stderr
    summary = json.loads((out / "study.json").read_text())
    assert [r["number"] for r in summary["trial_rows"]] == list(range(8))
    assert (out / "trial_0006").is_dir() and (out / "trial_0007").is_dir()
    assert len(stdout.splitlines()) == 1 + 8 + 1  # header, eight trials, the best

    # --trials 0 reports the study as it stands
    code, stdout, _ = cli("tune", "example.sine", "--space", study["root"] / "space.yaml", "--trials", 0, *STUDY,
                          "--out", out, "--set", *SMALL)
    assert code == 0 and len(stdout.splitlines()) == 10


@needs_optuna
def test_a_study_continues_only_with_its_own_settings(study):
    space = study["root"] / "space.yaml"
    code, _, stderr = cli("tune", "example.sine", "--space", space, "--trials", 1, "--out", study["out"],
                          "--set", "samples=128", "epochs=3")
    assert code == 2 and "another space or other --set values" in stderr
    code, _, stderr = cli("tune", "example.sine", "--space", space, "--trials", 1, "--out", study["out"],
                          "--study", "other", "--set", *SMALL)
    assert code == 2 and "holds study 'space'" in stderr


BAD_SPACES = {
    "unknown key": ("hiden: {int: [4, 16]}", "unknown config key 'hiden'; did you mean 'hidden'?"),
    "wrong type": ("hidden: {uniform: [4, 16]}", "'hidden' has type int; uniform draws real numbers (use int)"),
    "bad distribution": ("lr: {logunifrom: [1e-4, 1e-1]}", "unknown distribution 'logunifrom'"),
    "bad range": ("lr: {loguniform: [0, 1e-1]}", "a log scale needs low above 0"),
    "bad choice": ("optimizer: {choice: [adam, adamz]}", "invalid value for 'optimizer': 'adamz'"),
    "not a distribution": ("dropout: 0.3", "expected a distribution"),
}


@needs_optuna
@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_a_bad_space_is_one_line_exit_2_before_any_trial(case, tmp_path):
    text, message = BAD_SPACES[case]
    (tmp_path / "bad.yaml").write_text(text + "\n")
    code, stdout, stderr = cli("tune", "example.sine", "--space", tmp_path / "bad.yaml", "--out", tmp_path / "study")
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("dlguide: error: space file")
    assert message in stderr
    assert not (tmp_path / "study").exists()  # no study folder, no database, no trial


@needs_optuna
def test_grid_sampler_with_hyperband_runs_each_combination_once(tmp_path):
    (tmp_path / "grid.yaml").write_text("hidden: {choice: [4, 8]}\nlr: {uniform: [0.01, 0.02], step: 0.01}\n")
    code, _, stderr = cli("tune", "example.sine", "--space", tmp_path / "grid.yaml", "--sampler", "grid", "--pruner",
                          "hyperband", "--trials", 9, "--out", tmp_path / "study", "--set", *SMALL, "--quiet")
    assert code == 0, stderr
    rows = json.loads((tmp_path / "study" / "study.json").read_text())["trial_rows"]
    assert sorted((r["params"]["hidden"], r["params"]["lr"]) for r in rows) == [
        (4, 0.01), (4, 0.02), (8, 0.01), (8, 0.02)]  # the grid ran out: the study stops by itself


def test_without_optuna_tune_says_what_to_install(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else find_spec(name, *a))
    (tmp_path / "space.yaml").write_text(SPACE)
    code, _, stderr = cli("tune", "example.sine", "--space", tmp_path / "space.yaml", "--out", tmp_path / "study")
    assert code == 2
    assert stderr.strip() == "dlguide: error: dlguide tune needs optuna: pip install 'dlguide-core[tune]'"
    assert not (tmp_path / "study").exists()


def test_lr_find_suggests_a_rate_in_range_and_leaves_no_run_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    temporary = set(glob.glob(os.path.join(tempfile.gettempdir(), "dlguide-lr-find-*")))
    code, stdout, stderr = cli("lr-find", "example.sine", "--set", "samples=256", "hidden=8", "--min-lr", "1e-6",
                               "--max-lr", "10", "--steps", 60)
    assert code == 0, stderr
    assert len(stdout.strip().splitlines()) == 1 and stdout.startswith("suggested lr ")
    folder = tmp_path / "runs" / "example.sine" / "lr-find"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["lr_find.json", "lr_find.png"]
    assert (folder / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    found = json.loads((folder / "lr_find.json").read_text())
    assert 1e-6 <= found["suggested_lr"] <= 10 and found["method"] == "steepest descent of the smoothed loss"
    assert f"{found['suggested_lr']:.3g}" in stdout
    lrs = [p["lr"] for p in found["points"]]
    assert lrs[0] == pytest.approx(1e-6) and lrs == sorted(lrs) and len(lrs) == found["batches"] <= 60
    assert found["stopped"] in ("steps", "diverged")
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "dlguide-lr-find-*"))) == temporary

    code, _, _ = cli("lr-find", "example.sine", "--set", "samples=256", "--steps", 20, "--out", tmp_path / "mine")
    assert code == 0 and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["lr_find.json", "lr_find.png"]
    code, _, stderr = cli("lr-find", "example.sine", "--min-lr", "1", "--max-lr", "0.1", "--out", tmp_path / "bad")
    assert code == 2 and "expected 0 < min-lr < max-lr" in stderr and not (tmp_path / "bad").exists()


# -- several processes ------------------------------------------------------------------------
@needs_optuna
@pytest.mark.slow
def test_workers_share_one_sqlite_study(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    code, stdout, stderr = finish(dlguide("tune", "example.sine", "--space", tmp_path / "space.yaml", "--trials", 4,
                                          "--workers", 2, "--seed", 0, "--out", tmp_path / "study", "--set", *SMALL))
    assert code == 0, stderr
    trials = trials_of("space", f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # each worker draws its own values
    assert (tmp_path / "study" / "best.yaml").is_file()


@needs_optuna
@pytest.mark.slow
def test_a_killed_tuner_loses_only_its_running_trial(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    args = ["tune", "example.sine", "--space", tmp_path / "space.yaml", "--out", tmp_path / "study",
            "--set", "samples=256", "epochs=40"]
    proc = dlguide(*args, "--trials", 50)
    started = tmp_path / "study" / "trial_0001" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not started.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.is_file(), finish(proc)[2]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    code, stdout, stderr = finish(dlguide(*args, "--trials", 1))
    assert code == 0, stderr
    states = {t.number: t.state.name for t in trials_of("space", f"sqlite:///{tmp_path / 'study' / 'study.db'}")}
    assert states[0] == "COMPLETE" and states[1] in ("RUNNING", "FAIL")  # the killed one
    assert states[2] in ("COMPLETE", "PRUNED") and len(states) == 3  # the rerun went on
    assert (tmp_path / "study" / "trial_0002" / "metrics.json").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A PostgreSQL server of the Debian package on a free port and a temporary data folder."""
    if not any(importlib.util.find_spec(driver) for driver in ("psycopg", "psycopg2")):
        pytest.skip("no PostgreSQL driver for Python: pip install psycopg2-binary")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    folder = Path(bins[-1]) if bins else (Path(shutil.which("pg_ctl")).parent if shutil.which("pg_ctl") else None)
    if folder is None or not (folder / "initdb").is_file():
        pytest.skip("PostgreSQL is not installed (Debian package 'postgresql': "
                    "python tools/install_system_packages.py)")
    user: str | None = None
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no 'postgres' user to run the server as (Debian package 'postgresql')")
        user = "postgres"
    data = Path(tempfile.mkdtemp(prefix="dlguide-pg-"))
    if user:
        shutil.chown(data, user)

    def run(*cmd: object, timeout: float = 120) -> None:
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True, user=user, timeout=timeout)

    port = _free_port()
    try:
        run(folder / "initdb", "-D", data / "db", "-U", "tuner", "--auth=trust", "-E", "UTF8")
        run(folder / "pg_ctl", "-D", data / "db", "-l", data / "server.log", "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1")
        run(folder / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "tuner", "optuna")
        yield f"postgresql://tuner@127.0.0.1:{port}/optuna"
    finally:
        with contextlib.suppress(Exception):
            run(folder / "pg_ctl", "-D", data / "db", "-m", "immediate", "-w", "-t", "60", "stop")
        shutil.rmtree(data, ignore_errors=True)


@needs_optuna
@pytest.mark.slow
def test_two_tuners_share_one_study_through_postgresql(postgres, tmp_path):
    """Two commands, as on two machines: each its own study folder, one study in the server."""
    (tmp_path / "space.yaml").write_text(SPACE)
    common = ["tune", "example.sine", "--space", tmp_path / "space.yaml", "--storage", postgres, "--study", "shared",
              "--set", *SMALL]
    first = dlguide(*common, "--trials", 3, "--workers", 2, "--seed", 0, "--out", tmp_path / "a")
    second = dlguide(*common, "--trials", 2, "--seed", 1, "--out", tmp_path / "b")
    for proc in (first, second):
        code, _, stderr = finish(proc)
        assert code == 0, stderr
    trials = trials_of("shared", postgres)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]  # numbered by the server: none twice
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    folders = {Path(t.user_attrs["run_dir"]).parent.name for t in trials}
    assert folders == {"a", "b"}
    assert len(list((tmp_path / "a").glob("trial_*"))) == 3 and len(list((tmp_path / "b").glob("trial_*"))) == 2

    # the report is of the whole study, on either machine; a best run made elsewhere is resolved again
    shutil.rmtree(tmp_path / "b")
    code, stdout, stderr = finish(dlguide(*common, "--trials", 0, "--out", tmp_path / "a"))
    assert code == 0, stderr
    summary = json.loads((tmp_path / "a" / "study.json").read_text())
    assert summary["trials"] == 5 and summary["storage"] == postgres
    config = yaml.safe_load((tmp_path / "a" / "best.yaml").read_text())
    assert config["lr"] == pytest.approx(summary["best"]["params"]["lr"]) and config["samples"] == 256
