"""No run is stranded and a run directory belongs to one process: each test reproduces a
failure found by crashing and attacking runs (kill -9 at chosen moments in a subprocess,
planted files and links, a full disk, two processes on one directory)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dlguide import CheckpointError, RunError, hookimpl
from dlguide._checkpoint import load_checkpoint
from dlguide._rundir import EpochLog
from dlguide._runs import resume_run, run_task
from dlguide.testing import run_cli

SETS = ["samples=512", "batch_size=32", "hidden=16", "dropout=0", "epochs=4", "checkpoint_interval=0"]


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


def killer(tmp_path, body):
    """A plugin module that kills its own process (kill -9) at one moment of a run."""
    (tmp_path / "killer.py").write_text("import os, signal\nfrom dlguide import hookimpl\n\n" + textwrap.dedent(body))
    return {"PYTHONPATH": str(tmp_path), "DLGUIDE_PLUGINS": "killer"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert run_cli("run", "example.sine", "--out", out, "--quiet", "--set", *SETS).returncode == 0
    return out


def same_run(run, reference):
    for key, value in metrics(reference).items():
        assert metrics(run)[key] == pytest.approx(value, abs=1e-6), key
    a, b = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_after_the_last_checkpoint_resume_finishes_the_run(tmp_path, uninterrupted):
    env = killer(tmp_path, """
        @hookimpl
        def dlguide_checkpoint_saved(trainer, path, kind):
            if kind == "last" and trainer.epoch == trainer.max_epochs:
                os.kill(os.getpid(), signal.SIGKILL)  # trained to the end; no test pass, weights or metrics yet
        """)
    out = tmp_path / "run"
    assert run_cli("run", "example.sine", "--out", out, "--quiet", "--set", *SETS, env=env).returncode == -9
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()
    res = run_cli("resume", out, "--quiet")
    assert res.returncode == 0, res.stderr
    same_run(out, uninterrupted)
    again = run_cli("resume", out)  # now it is finished
    assert again.returncode == 2 and "already finished 4 epochs" in again.stderr


def test_killed_between_last_and_best_resume_ends_as_the_uninterrupted_run(tmp_path, uninterrupted):
    env = killer(tmp_path, """
        @hookimpl
        def dlguide_checkpoint_saved(trainer, path, kind):
            # epoch 3 improves: last.ckpt is written, the link of best.ckpt to it is not
            if kind == "last" and trainer.epoch == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        """)
    out = tmp_path / "run"
    assert run_cli("run", "example.sine", "--out", out, "--quiet", "--set", *SETS, env=env).returncode == -9
    assert load_checkpoint(out / "checkpoints" / "best.ckpt")["epoch"] == 2  # the two disagree on disk
    assert run_cli("resume", out, "--quiet").returncode == 0
    assert load_checkpoint(out / "checkpoints" / "best.ckpt")["epoch"] == 4
    same_run(out, uninterrupted)


def test_resume_removes_what_crashed_writes_left(tmp_path):
    out = tmp_path / "run"
    run_task("example.sine", overrides=[*SETS, "epochs=2"], out=out, progress="none")
    stray = [out / "checkpoints" / ".last.ckpt.k2j3l4.tmp", out / ".metrics.json.x8y9.tmp"]
    for path in stray:
        path.write_bytes(b"half a file")
    resume_run(out, overrides=["epochs=3"], progress="none")
    assert not any(path.exists() for path in stray)


def test_a_planted_link_at_a_temporary_name_is_not_written_through(tmp_path):
    out = tmp_path / "run"
    run_task("example.sine", overrides=[*SETS, "epochs=1"], out=out, progress="none")
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (out / ".eval.json.tmp").symlink_to(target)  # the name a write used to go through
    assert run_cli("eval", out).returncode == 0
    assert target.read_text() == "keep me"
    assert json.loads((out / "eval.json").read_text())


class Hoarder:
    """A plugin that keeps a numpy array in checkpoints from the second epoch on."""

    @hookimpl
    def dlguide_save_checkpoint(self, trainer, checkpoint):
        if trainer.epoch >= 2:
            checkpoint["callbacks"]["hoarder"] = {"seen": np.arange(3)}


def test_a_plugin_state_that_checkpoints_cannot_load_stops_the_run_at_once(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        run_task("example.sine", overrides=SETS, out=out, progress="none", plugins={"hoarder": Hoarder()})
    assert str(info.value) == ("plugin 'hoarder' put a ndarray at checkpoint['callbacks']['hoarder']['seen'], which a "
                               "checkpoint cannot hold (weights_only loading refuses it; keep tensors, numbers, "
                               "strings, lists and dicts there); run stopped, the previous checkpoint kept")
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_a_run_without_a_checkpoint_can_be_started_again(tmp_path):
    out = tmp_path / "run"
    # a loss that overflows in the first epoch, before the first checkpoint (60 s)
    res = run_cli("run", "example.sine", "--out", out, "--quiet", "--set", *SETS, "lr=1e30", "checkpoint_interval=60")
    assert res.returncode == 1
    assert f"no checkpoint had been written yet; 'dlguide resume {out}' starts it again" in res.stderr
    again = run_cli("run", "example.sine", "--out", out, "--set", *SETS)
    assert again.returncode == 2
    assert again.stderr.strip() == (f"dlguide: error: {out} holds a run that never wrote a checkpoint; start it again "
                                    f"with 'dlguide resume {out}' or choose another --out")
    resumed = run_cli("resume", out, "--set", "lr=0.01")
    assert resumed.returncode == 0, resumed.stderr
    assert "has no checkpoint yet: starting it again from its saved config" in resumed.stderr
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_a_torn_last_row_of_the_epoch_log_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run"
    run_task("example.sine", overrides=[*SETS, "epochs=2"], out=out, progress="none")
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "train/loss": 0.1')  # the disk filled in the middle of a row
    resume_run(out, overrides=["epochs=3"], progress="none")
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_full_disk_is_named_in_one_line(tmp_path):
    log = EpochLog(open("/dev/full", "a"), tmp_path / "metrics.jsonl")
    with pytest.raises(RunError) as info:
        log.append({"epoch": 1})
    assert str(info.value) == (f"cannot write {tmp_path / 'metrics.jsonl'}: no space left on the device; free some and "
                               f"continue with 'dlguide resume {tmp_path}'")


@pytest.mark.slow
def test_a_run_directory_is_locked_while_it_trains(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "dlguide", "run", "example.sine", "--out", str(out), "--quiet",
                              "--set", "samples=20000", "epochs=500", "hidden=32"],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600  # a bound on a slow start, not a speed limit
        while time.time() < deadline and not (out / "metrics.jsonl").exists() and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None
        for args in (["run", "example.sine", "--out", out], ["resume", out]):
            res = run_cli(*args)
            assert res.returncode == 2
            assert res.stderr.strip() == (f"dlguide: error: {out} is in use by process {first.pid} (a run or resume "
                                          "of it); wait for that process to end")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # killed, it left no lock behind: the run goes on from its start (no checkpoint yet) or its last checkpoint
    res = run_cli("resume", out, "--quiet", "--set", "epochs=1")
    assert res.returncode in (0, 2), res.stderr
    assert "is in use" not in res.stderr


def test_eval_of_an_unfinished_run_and_a_changed_scheduler_are_one_line(tmp_path):
    out = tmp_path / "run"
    env = killer(tmp_path, """
        @hookimpl
        def dlguide_checkpoint_saved(trainer, path, kind):
            if kind == "last" and trainer.epoch == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        """)
    assert run_cli("run", "example.sine", "--out", out, "--quiet", "--set", *SETS, "scheduler=none",
                   env=env).returncode == -9
    res = run_cli("eval", out)
    assert (res.returncode, res.stderr.strip()) == (2, f"dlguide: error: {out} has no trained weights yet "
                                                       f"(model.safetensors); finish it with 'dlguide resume {out}'")
    res = run_cli("resume", out, "--set", "scheduler=onecycle")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("dlguide: error: 'scheduler' cannot change when a run resumes (it was 'none')")


@pytest.mark.slow
def test_two_runs_started_together_into_one_directory_leave_one_run(tmp_path):
    """Started at the same moment, one run takes the directory and the other is refused in one
    line (it is in use, or already holds a run): never both, never epochs logged twice."""
    for attempt in range(2):
        out = tmp_path / f"run{attempt}"
        command = [sys.executable, "-m", "dlguide", "run", "example.sine", "--out", str(out), "--quiet",
                   "--set", "epochs=3", "samples=256"]
        procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], results
        refused = next(err for code, err in results if code == 2).strip()
        assert len(refused.splitlines()) == 1
        assert "is in use by process" in refused or "already holds a run" in refused, refused
        epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]
