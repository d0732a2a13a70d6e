"""Faults and agreed decisions under several processes: a worker that raises alone brings the
group down with its own error in one line; a killed worker with --max-restarts continues from
the last checkpoint and the run ends as an uninterrupted one; early stopping, a non-finite loss
in one process only, and checkpoints every epoch never leave a process waiting in a collective;
FSDP2 (on gloo here, for correctness; users get it on CUDA) trains and resumes as one process."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from dlguide.testing import run_cli

SETS = ["samples=520", "batch_size=30", "epochs=3", "dropout=0", "hidden=16", "scheduler=cosine",
        "checkpoint_interval=0"]


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


def epochs(run):
    return [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()]


def plugin(tmp_path, name, body):
    """A plugin module that every worker loads (``DLGUIDE_PLUGINS``), acting in one process only."""
    (tmp_path / f"{name}.py").write_text("import math, os, signal\nfrom dlguide import hookimpl\n\n"
                                         + textwrap.dedent(body))
    return {"PYTHONPATH": str(tmp_path), "DLGUIDE_PLUGINS": name}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    res = run_cli("run", "example.sine", "--nproc-per-node", "2", "--out", out, "--quiet", "--set", *SETS)
    assert res.returncode == 0, res.stderr
    return metrics(out)


@pytest.mark.slow
def test_a_worker_that_raises_alone_brings_the_group_down_with_its_error_in_one_line(tmp_path):
    env = plugin(tmp_path, "raises", """
        @hookimpl
        def dlguide_train_batch_end(trainer, batch_idx, loss):
            if os.environ["RANK"] == "1" and trainer.epoch == 1 and batch_idx == 2:
                raise ValueError("worker 1 cannot read its share of batch 2")
        """)
    res = run_cli("run", "example.sine", "--nproc-per-node", "2", "--out", tmp_path / "run", "--quiet", "--set",
                  *SETS, env=env)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines[-2:] == ["dlguide: error: ValueError: worker 1 cannot read its share of batch 2 (rerun with --debug "
                          "for the traceback)",
                          "dlguide: error: worker 1 of the distributed run failed with exit code 1 (its error is above)"]
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_last_checkpoint_and_the_run_ends_as_uninterrupted(tmp_path, uninterrupted):
    env = plugin(tmp_path, "killed", """
        @hookimpl
        def dlguide_train_batch_end(trainer, batch_idx, loss):
            if (os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"
                    and trainer.epoch == 1 and batch_idx == 2):
                os.kill(os.getpid(), signal.SIGKILL)
        """)
    out = tmp_path / "run"
    res = run_cli("run", "example.sine", "--nproc-per-node", "2", "--max-restarts", "1", "--out", out, "--set", *SETS,
                  env=env)
    assert res.returncode == 0, res.stderr
    assert "resuming at epoch 2 of 3" in res.stderr  # the restarted workers took the epoch-1 checkpoint
    assert epochs(out) == [1, 2, 3]
    for key, value in uninterrupted.items():
        assert metrics(out)[key] == pytest.approx(value, abs=1e-5), key


@pytest.mark.slow
def test_a_killed_worker_without_restarts_ends_the_run_in_one_line(tmp_path):
    env = plugin(tmp_path, "killed", """
        @hookimpl
        def dlguide_train_batch_end(trainer, batch_idx, loss):
            if os.environ["RANK"] == "1" and trainer.epoch == 1 and batch_idx == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        """)
    out = tmp_path / "run"
    res = run_cli("run", "example.sine", "--nproc-per-node", "2", "--out", out, "--quiet", "--set", *SETS, env=env)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (f"dlguide: error: worker 1 of the distributed run was killed by "
                                                   f"SIGKILL; continue from its last checkpoint with: dlguide resume "
                                                   f"{out} --nproc-per-node 2")
    resumed = run_cli("resume", out, "--nproc-per-node", "2", "--quiet")  # the epoch-1 checkpoint is there
    assert resumed.returncode == 0, resumed.stderr
    assert epochs(out) == [1, 2, 3]


@pytest.mark.slow
def test_a_loss_that_is_not_finite_in_one_process_stops_both_at_the_same_step(tmp_path):
    env = plugin(tmp_path, "poisoned", """
        @hookimpl
        def dlguide_train_batch_end(trainer, batch_idx, loss):
            if os.environ["RANK"] == "1" and trainer.epoch == 1 and batch_idx == 2:
                next(trainer.module.parameters()).data.fill_(math.nan)  # this process's next loss is NaN
        """)
    out = tmp_path / "run"
    res = run_cli("run", "example.sine", "--nproc-per-node", "2", "--out", out, "--quiet", "--set", *SETS, env=env)
    assert res.returncode != 0
    assert "loss is not finite in another process at epoch 2, batch 3" in res.stderr  # the first process's line
    assert "loss is nan at epoch 2, batch 3" in res.stderr  # the second process's own
    assert epochs(out) == [1]
    assert (out / "checkpoints" / "last.ckpt").is_file()  # the last good one is kept


@pytest.mark.slow
def test_early_stopping_ends_every_process_at_the_same_epoch(tmp_path):
    out = tmp_path / "run"
    # a learning rate too small to move a float32 weight: the validation loss never improves after the first epoch
    res = run_cli("run", "example.sine", "--nproc-per-node", "2", "--out", out, "--set", *SETS, "epochs=6", "lr=1e-30",
                  "scheduler=none", "early_stopping_patience=2")
    assert res.returncode == 0, res.stderr
    assert epochs(out) == [1, 2, 3]
    assert (out / "metrics.json").is_file() and (out / "model.safetensors").is_file()


def test_fsdp_and_sync_batchnorm_on_cpu_are_usage_errors_before_any_worker_starts(tmp_path):
    res = run_cli("run", "example.sine", "--nproc-per-node", "2", "--out", tmp_path / "a", "--set", "strategy=fsdp",
                  "device=cpu")
    assert (res.returncode, res.stderr.strip()) == (2, "dlguide: error: strategy fsdp (FSDP2's fully_shard) runs on "
                                                       "CUDA devices; on cpu use strategy=ddp")
    res = run_cli("run", "example.sine", "--nproc-per-node", "2", "--out", tmp_path / "b", "--set", "sync_batchnorm=true",
                  "device=cpu")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("dlguide: error: sync_batchnorm=true needs CUDA devices")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


FSDP_WORKER = '''
import json, sys
from dlguide import resume_run, run_task
from dlguide._strategy import FSDPStrategy

class CPUFSDP(FSDPStrategy):
    cpu_allowed = True  # gloo runs FSDP2 too: the correctness of the strategy, checked without a GPU

out, *sets = sys.argv[1:]
run_task("example.sine", out=out, overrides=[*sets, "epochs=2"], strategy=CPUFSDP("cpu"), progress="none")
resume_run(out, overrides=["epochs=3"], strategy=CPUFSDP("cpu"), progress="none")
'''


@pytest.mark.slow
def test_fsdp2_shards_train_and_resume_as_one_process(tmp_path):
    import subprocess

    script = tmp_path / "fsdp_worker.py"
    script.write_text(FSDP_WORKER)
    sets = [s for s in SETS if not s.startswith("epochs=")]
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script), str(tmp_path / "fsdp"), *sets], capture_output=True, text=True, timeout=900,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "LOGLEVEL": "ERROR"})
    assert res.returncode == 0, res.stderr[-3000:]
    one = tmp_path / "one"
    assert run_cli("run", "example.sine", "--out", one, "--quiet", "--set", *sets, "epochs=2").returncode == 0
    assert run_cli("resume", one, "--quiet", "--set", "epochs=3").returncode == 0
    for key, value in metrics(one).items():  # sharded parameters, gathered checkpoints: the same run
        assert metrics(tmp_path / "fsdp")[key] == pytest.approx(value, abs=1e-5), key
    assert epochs(tmp_path / "fsdp") == [1, 2, 3]
    # the weights are whole: one process evaluates them as any other run's
    assert run_cli("eval", tmp_path / "fsdp").returncode == 0
