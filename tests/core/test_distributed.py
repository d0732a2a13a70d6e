"""Several processes on PyTorch's own engine: ``dlguide run --nproc-per-node 2`` relaunches
itself under torch.distributed.run (gloo on CPU), each process takes its part of every global
batch, evaluation counts every sample once, and only the first process writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dlguide._data import EpochBatches
from dlguide._launch import worker_argv
from dlguide.testing import run_cli as dlguide

# 520 points: 390 to train (13 global batches of 30), 65 to validate and 65 to test, odd sizes
# that two processes cannot split evenly; no dropout, so both runs draw the same random numbers
SETS = ["samples=520", "batch_size=30", "epochs=3", "dropout=0", "hidden=16", "scheduler=cosine"]


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one(tmp_path):
    one = dlguide("run", "example.sine", "--out", tmp_path / "one", "--quiet", "--set", *SETS)
    assert one.returncode == 0, one.stderr
    two = dlguide("run", "example.sine", "--nproc-per-node", "2", "--out", tmp_path / "two", "--set", *SETS)
    assert two.returncode == 0, two.stderr
    assert "on cpu x 2 processes (ddp)" in two.stderr  # printed once: only the first process reports
    assert two.stderr.count("epoch 3/3") == 1
    expected, got = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert got.keys() == expected.keys()
    for key, value in expected.items():  # training, and val/test over 65 samples each, as one process
        assert got[key] == pytest.approx(value, abs=1e-5), key
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]  # one writer, no row twice
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_a_global_batch_that_does_not_divide_is_refused_before_any_worker_starts(tmp_path):
    res = dlguide("run", "example.sine", "--nproc-per-node", "2", "--out", tmp_path / "r", "--set", "batch_size=33")
    assert res.returncode == 2
    assert res.stderr.strip() == ("dlguide: error: batch_size 33 is the global batch and must divide among 2 "
                                  "processes; choose a multiple of 2")
    assert not (tmp_path / "r").exists()


def test_the_launcher_passes_everything_but_its_own_flags():
    argv = ["run", "example.sine", "--nproc-per-node", "2", "--nnodes=1", "--set", "epochs=2", "--node-rank", "0"]
    assert worker_argv(argv) == ["run", "example.sine", "--set", "epochs=2"]


@pytest.mark.parametrize(("size", "batch", "world"), [(13, 4, 2), (12, 4, 2), (13, 6, 3), (7, 4, 1)])
def test_processes_share_every_global_batch_and_every_evaluation_sample(size, batch, world):
    def batches(rank, shuffle, evaluation, start=0, processes=world):
        sampler = EpochBatches(size, batch, shuffle, torch.Generator().manual_seed(5), rank, processes, evaluation)
        sampler.start = start
        return list(sampler)

    one = batches(0, True, False, processes=1)
    parts = [batches(rank, True, False) for rank in range(world)]
    assert all(len(p) == len(parts[0]) for p in parts)  # every process takes part in every step
    for k, global_batch in enumerate(one[:len(parts[0])]):
        assert sum((p[k] for p in parts), []) == global_batch  # together, exactly one process's batch
    assert [len(batches(r, True, False, start=2)) for r in range(world)] == [len(parts[0]) - 2] * world
    seen = sorted(i for rank in range(world) for b in batches(rank, False, True) for i in b)
    assert seen == list(range(size))  # evaluation: every sample once, none padded in


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_process_at_one_step_and_resume_is_exact(tmp_path):
    import signal
    import time

    sets = ["samples=16000", "batch_size=32", "epochs=2", "dropout=0", "hidden=16", "scheduler=onecycle"]
    full = dlguide("run", "example.sine", "--nproc-per-node", "2", "--out", tmp_path / "full", "--quiet", "--set", *sets)
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "dlguide", "run", "example.sine", "--nproc-per-node", "2", "--out",
                             str(cut), "--quiet", "--set", *sets], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900  # the signal must come while the second epoch trains, however slow the machine
    while time.time() < deadline and proc.poll() is None and not (cut / "metrics.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip() == (f"dlguide: error: SIGTERM received; the workers saved a checkpoint in {cut}; continue "
                           f"with: dlguide resume {cut} --nproc-per-node 2")
    resumed = dlguide("resume", cut, "--nproc-per-node", "2", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = metrics(tmp_path / "full"), metrics(cut)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert [json.loads(r)["epoch"] for r in (cut / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_launchers_on_one_machine_run_as_two_nodes(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    out = tmp_path / "run"
    nodes = [subprocess.Popen([sys.executable, "-m", "dlguide", "run", "example.sine", "--nnodes", "2", "--node-rank",
                               str(rank), "--rdzv-endpoint", endpoint, "--out", str(out), "--quiet", "--set", *SETS],
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    errors = [node.communicate(timeout=900)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errors
    one = dlguide("run", "example.sine", "--out", tmp_path / "one", "--quiet", "--set", *SETS)
    assert one.returncode == 0, one.stderr
    for key, value in metrics(tmp_path / "one").items():  # two nodes of one process each train as one process
        assert metrics(out)[key] == pytest.approx(value, abs=1e-5), key

