"""The Trainer's guarantees: exact resume, extension, NaN guard, atomic checkpoints,
early stopping, accumulation, optimizers and schedules, checkpoint errors."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from dlguide import hookimpl
from dlguide._checkpoint import load_checkpoint
from dlguide._errors import CheckpointError, RunError, RunInterrupted, UsageError
from dlguide._runs import resume_run, run_task

FAST = ["samples=512", "batch_size=32", "hidden=16"]  # 384 training samples: 12 batches per epoch


def read_metrics(path):
    return json.loads((path / "metrics.json").read_text())


class SignalAt:
    """A run plugin that sends this process a signal at one point of the run (a user's Ctrl-C)."""

    def __init__(self, *, step=None, epoch=None, signum=signal.SIGINT):
        self.step, self.epoch, self.signum, self.sent = step, epoch, signum, False

    @hookimpl
    def dlguide_train_batch_end(self, trainer, batch_idx, loss):
        if self.step is not None and trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    @hookimpl
    def dlguide_epoch_end(self, trainer, epoch, metrics):
        if self.epoch is not None and epoch == self.epoch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(("where", "extra"), [
    ({"step": 17}, []), ({"epoch": 2}, []),
    # the best epoch (highest val/loss: the first) is only in memory when the signal comes
    ({"epoch": 2}, ["monitor_mode=max"]),
], ids=["mid-epoch", "epoch-boundary", "best-epoch-not-yet-written"])
def test_interrupted_run_resumes_to_identical_metrics(toy_runtime, tmp_path, where, extra):
    sets = [*FAST, "epochs=4", "dropout=0.2", "scheduler=cosine", "warmup_steps=5", *extra]
    full = run_task("example.sine", overrides=sets, out=tmp_path / "full", runtime=toy_runtime, progress="none")

    toy_runtime.pm.register(SignalAt(**where), name="signaller")
    with pytest.raises(RunInterrupted) as info:
        run_task("example.sine", overrides=sets, out=tmp_path / "cut", runtime=toy_runtime, progress="none")
    toy_runtime.pm.unregister(name="signaller")
    assert info.value.exit_code == 128 + signal.SIGINT
    assert "dlguide resume" in str(info.value)
    assert not (tmp_path / "cut" / "metrics.json").exists()

    resumed = resume_run(tmp_path / "cut", runtime=toy_runtime, progress="none")
    assert resumed.metrics.keys() == full.metrics.keys()
    for key, value in full.metrics.items():
        assert resumed.metrics[key] == pytest.approx(value, abs=1e-6), key
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_finished_run_is_extended(toy_runtime, tmp_path):
    out = tmp_path / "run"
    run_task("example.sine", overrides=[*FAST, "epochs=2"], out=out, runtime=toy_runtime, progress="none")
    with pytest.raises(UsageError, match="already finished 2 epochs"):
        resume_run(out, runtime=toy_runtime, progress="none")
    resume_run(out, overrides=["epochs=4"], runtime=toy_runtime, progress="none")
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 4
    assert "epochs: 4" in (out / "config.yaml").read_text()


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(toy_runtime, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunError, match=r"loss is nan at epoch 2, batch 5, step 17"):
        run_task("toy.nan", overrides=[*FAST, "epochs=3", "nan_at_step=18", "checkpoint_interval=0"], out=out,
                 runtime=toy_runtime, progress="none")
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert not (out / "metrics.json").exists()


def test_failed_checkpoint_write_keeps_previous_file(toy_runtime, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_task("example.sine", overrides=[*FAST, "epochs=1"], out=out, runtime=toy_runtime, progress="none")
    last = out / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def torn_write(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr("dlguide._checkpoint.torch.save", torn_write)
    with pytest.raises(OSError, match="disk full"):
        resume_run(out, overrides=["epochs=2"], runtime=toy_runtime, progress="none")
    assert last.read_bytes() == before
    assert load_checkpoint(last)["epoch"] == 1
    assert [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")] == []


class Saves:
    """Records the checkpoints a run announces, with the epoch each holds."""

    def __init__(self):
        self.saved = []

    @hookimpl
    def dlguide_checkpoint_saved(self, trainer, path, kind):
        self.saved.append((kind, load_checkpoint(path)["epoch"]))


def test_checkpoint_interval_writes_once_and_keeps_the_best_epoch(toy_runtime, tmp_path):
    # the highest val/loss is the best: an early epoch, which the end of the run has to write from memory
    sets = [*FAST, "epochs=4", "monitor=val/loss", "monitor_mode=max"]
    runs = {}
    for interval in ("0", "60"):
        saves = Saves()
        toy_runtime.pm.register(saves, name="saves")
        res = run_task("example.sine", overrides=[*sets, f"checkpoint_interval={interval}"], out=tmp_path / interval,
                       runtime=toy_runtime, progress="none")
        toy_runtime.pm.unregister(name="saves")
        runs[interval] = (res, saves.saved)
    every, once = runs["0"][1], runs["60"][1]
    assert [kind for kind, _ in every].count("last") == 4
    best_epoch = max(e for kind, e in every if kind == "best")
    assert best_epoch < 4
    assert once == [("best", best_epoch), ("last", 4)]  # best first: last.ckpt names a best already on disk
    a = load_checkpoint(tmp_path / "0" / "checkpoints" / "best.ckpt")
    b = load_checkpoint(tmp_path / "60" / "checkpoints" / "best.ckpt")
    assert a["epoch"] == b["epoch"] == best_epoch
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    assert runs["0"][0].metrics == runs["60"][0].metrics  # the same best weights were tested


@pytest.mark.parametrize("resettable", [True, False])
def test_metrics_are_made_once_per_stage_and_reset_before_each_pass(toy_runtime, tmp_path, resettable):
    from dlguide._config import resolve
    from dlguide._rundir import RunDir
    from dlguide._trainer import Trainer
    from toyplugin import CountingTask

    cfg = resolve(CountingTask.Config, overrides=[*FAST, "epochs=3", f"resettable={resettable}"])
    task = CountingTask(cfg, name="toy.counting")
    Trainer(task, RunDir.new("toy.counting", tmp_path / "run"), runtime=toy_runtime, progress="none").fit()
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["val/seen"] > 0 and [r["val/seen"] for r in rows] == [rows[0]["val/seen"]] * 3  # emptied each pass
    # metrics that can be reset are made once per stage; others afresh for every pass
    assert task.configured == (["val", "test"] if resettable else ["val", "val", "val", "test"])
    assert task.started == ["val", "val", "val", "test"]


def test_early_stopping_stops_when_monitor_stalls(toy_runtime, tmp_path):
    # an update far below float32 resolution leaves the weights, and val/loss, unchanged
    sets = [*FAST, "epochs=10", "optimizer=sgd", "lr=1e-30", "dropout=0", "early_stopping_patience=2"]
    run_task("example.sine", overrides=sets, out=tmp_path / "run", runtime=toy_runtime, progress="none")
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3  # the first epoch sets the best, two more without improvement stop the run
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["callbacks"]["early_stopping"]
    assert state["wait"] == 2


def test_accumulated_batches_equal_one_large_batch(toy_runtime, tmp_path):
    common = ["samples=1024", "hidden=16", "dropout=0", "epochs=1", "optimizer=sgd", "lr=0.1"]
    small = run_task("example.sine", overrides=[*common, "batch_size=32", "accumulate_grad_batches=4"],
                     out=tmp_path / "acc", runtime=toy_runtime, progress="none")
    large = run_task("example.sine", overrides=[*common, "batch_size=128"], out=tmp_path / "big",
                     runtime=toy_runtime, progress="none")
    a = load_checkpoint(small.run_dir / "checkpoints" / "last.ckpt")
    b = load_checkpoint(large.run_dir / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 6
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_trainer_steps_equal_a_plain_loop(toy_runtime, tmp_path, accumulate):
    """Two epochs of the Trainer (Adam, dropout on) end in the weights of a hand-written loop
    over the same batches: gradients zeroed once per step, never carried into the next."""
    from dlguide._config import resolve
    from dlguide._rundir import RunDir
    from dlguide._trainer import Trainer
    from dlguide_example.sine import SineRegression

    sets = [*FAST, "epochs=2", "optimizer=adam", "lr=0.01", f"accumulate_grad_batches={accumulate}"]
    run_task("example.sine", overrides=sets, out=tmp_path / "run", runtime=toy_runtime, progress="none")
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["model"]

    plain = Trainer(SineRegression(resolve(SineRegression.Config, overrides=sets)), RunDir(tmp_path / "plain"),
                    runtime=toy_runtime, progress="none")
    plain._setup()  # the same seeded weights and batch order, nothing of the loop
    model, loader = plain.model, plain.train_loader
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    n = loader.num_batches
    for epoch in range(2):
        model.train()
        for i, (x, y) in enumerate(loader.epoch(epoch)):
            window = min(accumulate, n - (i // accumulate) * accumulate)
            (torch.nn.functional.mse_loss(model(x), y) / window).backward()
            if (i + 1) % accumulate == 0 or i + 1 == n:
                opt.step()
                opt.zero_grad()
    assert trained.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(trained[key], value, rtol=1e-6, atol=1e-7)


def test_detached_copy_reuses_an_earlier_copy():
    from dlguide._checkpoint import detached_copy

    model = torch.nn.Linear(3, 2)
    state = {"model": model.state_dict(), "rng": torch.get_rng_state(), "history": [{"a": 1.0}]}
    first = detached_copy(state)
    with torch.no_grad():
        model.weight.add_(1.0)
    second = detached_copy({"model": model.state_dict(), "rng": state["rng"], "history": [{"a": 2.0}]}, into=first)
    assert second["model"]["weight"].data_ptr() == first["model"]["weight"].data_ptr()  # the memory reused
    torch.testing.assert_close(second["model"]["weight"], model.weight.detach(), rtol=0, atol=0)
    assert second["history"] == [{"a": 2.0}]
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on: the copy keeps its values
    assert not torch.equal(second["model"]["weight"], model.weight.detach())
    # a tensor whose shape changed is copied afresh; an earlier copy of another structure is ignored
    wider = detached_copy({"model": torch.nn.Linear(3, 4).state_dict()}, into=second)
    assert wider["model"]["weight"].shape == (4, 3)
    assert detached_copy({"model": [torch.ones(2)]}, into={"model": "x"})["model"][0].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
def test_each_optimizer_trains(toy_runtime, tmp_path, optimizer):
    lr = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05}.get(optimizer, 0.01)
    res = run_task("example.sine", overrides=[*FAST, "epochs=3", f"optimizer={optimizer}", f"lr={lr}"],
                   out=tmp_path / optimizer, runtime=toy_runtime, progress="none")
    rows = [json.loads(r) for r in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    opt_state = load_checkpoint(res.run_dir / "checkpoints" / "last.ckpt")["optimizers"][0]
    group = opt_state["param_groups"][0]
    if optimizer in ("momentum", "nesterov"):
        assert group["momentum"] == 0.9 and group["nesterov"] == (optimizer == "nesterov")


def lr_trace(scheduler, steps_per_epoch=10, epochs=3, **extra):
    from dlguide._config import resolve
    from dlguide._optim import Schedule, build_optimizer
    from dlguide._task import TrainConfig

    cfg = resolve(TrainConfig, overrides=[f"scheduler={scheduler}", f"epochs={epochs}", "lr=0.1",
                                          *(f"{k}={v}" for k, v in extra.items())])
    opt = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    sched = Schedule(cfg, opt, steps_per_epoch)
    trace = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            trace.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        sched.epoch_end(1.0)  # a monitored value that never improves
    return trace


def test_schedules_shape_the_learning_rate():
    assert set(lr_trace("none")) == {0.1}
    step = lr_trace("step", lr_step_epochs=1)
    assert step[0] == pytest.approx(0.1) and step[10] == pytest.approx(0.01) and step[20] == pytest.approx(0.001)
    cosine = lr_trace("cosine")
    assert cosine[0] == pytest.approx(0.1) and cosine[-1] < 0.001 and cosine == sorted(cosine, reverse=True)
    onecycle = lr_trace("onecycle")
    peak = max(range(len(onecycle)), key=onecycle.__getitem__)
    assert onecycle[0] < 0.01 and onecycle[peak] == pytest.approx(0.1, rel=0.05) and onecycle[-1] < 1e-4
    plateau = lr_trace("plateau", lr_patience=0, lr_gamma=0.5)
    assert plateau[0] == 0.1 and plateau[10] == pytest.approx(0.1) and plateau[20] == pytest.approx(0.05)
    warm = lr_trace("cosine", warmup_steps=5)
    assert warm[0] < warm[4] < warm[5] and warm[5] == pytest.approx(0.1)


def test_scheduler_runs_through_the_trainer(toy_runtime, tmp_path):
    res = run_task("example.sine", overrides=[*FAST, "epochs=2", "scheduler=step", "lr_step_epochs=1"],
                   out=tmp_path / "r", runtime=toy_runtime, progress="none")
    rows = [json.loads(r) for r in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["lr"] == pytest.approx(0.001)  # a decay after the first epoch's 12 steps
    assert rows[1]["lr"] == pytest.approx(0.0001)


def test_two_optimizers_driven_by_the_task_resume_exactly(toy_runtime, tmp_path):
    sets = [*FAST, "epochs=3"]
    full = run_task("toy.twoopt", overrides=sets, out=tmp_path / "full", runtime=toy_runtime, progress="none")
    ckpt = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    assert len(ckpt["optimizers"]) == 2 and ckpt["global_step"] == 36
    assert "train/body_loss" in json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[0])
    saved = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert saved["toy/protocol"] == "two optimizers" and saved["toy/head_weight_norm"] > 0
    toy_runtime.pm.register(SignalAt(step=20), name="signaller")
    with pytest.raises(RunInterrupted):
        run_task("toy.twoopt", overrides=sets, out=tmp_path / "cut", runtime=toy_runtime, progress="none")
    toy_runtime.pm.unregister(name="signaller")
    resumed = resume_run(tmp_path / "cut", runtime=toy_runtime, progress="none")
    for key, value in full.metrics.items():
        assert resumed.metrics[key] == (value if isinstance(value, str) else pytest.approx(value, abs=1e-6)), key


def test_corrupt_and_foreign_checkpoints_are_refused(toy_runtime, tmp_path):
    out = tmp_path / "run"
    run_task("toy.nan", overrides=[*FAST, "epochs=1", "nan_at_step=1000"], out=out, runtime=toy_runtime,
             progress="none")
    last = out / "checkpoints" / "last.ckpt"
    whole = last.read_bytes()
    for content, message in [
        (b"\x00garbage that is no zip file", r"is not a checkpoint \(torch's zip format was expected; it starts with "
                                             r"b'\\x00gar'\); to continue from the best epoch instead, copy .*best.ckpt "
                                             r"over it and resume"),
        (whole[:len(whole) // 2], r"is corrupt, cut short by a crash or a full disk \(.*\); to continue from the best "
                                  r"epoch instead"),
        (None, "not a dlguide checkpoint"),
    ]:
        if content is None:
            torch.save({"state_dict": {"w": torch.zeros(1)}}, last)
        else:
            last.write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            resume_run(out, overrides=["epochs=2"], runtime=toy_runtime, progress="none")
    # a dlguide checkpoint of another task
    other = tmp_path / "other"
    run_task("example.sine", overrides=[*FAST, "epochs=1"], out=other, runtime=toy_runtime, progress="none")
    last.write_bytes((other / "checkpoints" / "last.ckpt").read_bytes())
    with pytest.raises(CheckpointError, match="belongs to task 'example.sine', not 'toy.nan'"):
        resume_run(out, overrides=["epochs=2"], runtime=toy_runtime, progress="none")


def test_run_directory_contents(toy_runtime, tmp_path):
    out = tmp_path / "run"
    res = run_task("example.sine", overrides=[*FAST, "epochs=2"], out=out, runtime=toy_runtime, progress="none")
    for name in ("config.yaml", "task.json", "metrics.jsonl", "metrics.json", "model.safetensors",
                 "learning_curves.png", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (out / name).is_file(), name
    assert set(res.metrics) >= {"train/loss", "val/loss", "val/r2", "test/loss", "test/r2", "test/mae"}
    assert (out / "config.yaml").read_text().startswith("task: example.sine\n")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()  # every epoch's scalars, one event per epoch, written when the run ends
    assert {"train/loss", "val/loss", "val/r2", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/loss")] == [1, 2]
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx([r["val/loss"] for r in rows])
    with pytest.raises(UsageError, match="already holds a run"):
        run_task("example.sine", overrides=FAST, out=out, runtime=toy_runtime, progress="none")


def test_best_checkpoint_weights_are_the_tested_ones(toy_runtime, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    run_task("example.sine", overrides=[*FAST, "epochs=3", "monitor=val/r2"], out=out, runtime=toy_runtime,
             progress="none")
    best = load_checkpoint(out / "checkpoints" / "best.ckpt")
    weights = load_file(out / "model.safetensors")
    for key, value in best["model"].items():
        torch.testing.assert_close(weights[key], value)
    assert best["callbacks"]["checkpointer"]["best"] == max(
        json.loads(r)["val/r2"] for r in (out / "metrics.jsonl").read_text().splitlines())


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_reduced_precision_runs_on_cpu(toy_runtime, tmp_path, precision):
    res = run_task("example.sine", overrides=[*FAST, "epochs=2", f"precision={precision}", "deterministic=true"],
                   out=tmp_path / precision, runtime=toy_runtime, progress="none")
    assert res.metrics["test/r2"] > 0.3


def test_missing_device_is_a_usage_error_before_anything_is_written(toy_runtime, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="device 'cuda' was asked for but torch sees no CUDA device"):
        run_task("example.sine", overrides=["device=cuda"], out=tmp_path / "r", runtime=toy_runtime)
    assert not (tmp_path / "r").exists()


def test_gradient_clipping_bounds_the_update(toy_runtime, tmp_path):
    from dlguide._config import resolve
    from dlguide._optim import Schedule
    from dlguide._rundir import RunDir
    from dlguide._trainer import Trainer
    from dlguide_example.sine import SineConfig, SineRegression

    for clip, expected in [(0.0, 50.0), (0.5, 0.5)]:
        cfg = resolve(SineConfig, overrides=["optimizer=sgd", "lr=1", f"gradient_clip_norm={clip}"])
        trainer = Trainer(SineRegression(cfg), RunDir(tmp_path), runtime=toy_runtime)
        param = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.SGD([param], lr=1.0)
        trainer.optimizers, trainer.schedules = [opt], [Schedule(cfg, opt, steps_per_epoch=1)]
        param.grad = torch.tensor([30.0, 40.0])  # norm 50
        trainer.optimizer_step(opt)
        assert float(param.detach().norm()) == pytest.approx(expected)
        assert param.grad is None


def test_progress_bar_shows_every_epoch_that_lasts(toy_runtime, tmp_path, capsys, monkeypatch):
    from dlguide._callbacks import ProgressReporter

    monkeypatch.setattr(ProgressReporter, "DELAY_S", 0.0)  # as if every epoch lasted longer than the delay
    run_task("example.sine", overrides=[*FAST, "epochs=3"], out=tmp_path / "run", runtime=toy_runtime,
             progress="bar")
    err = capsys.readouterr().err
    for epoch in (1, 2, 3):  # the bar's description and the summary line of every epoch
        assert f"epoch {epoch}/3:" in err and f"epoch {epoch}/3  train/loss" in err
    assert "/12 [" in err and "batch" in err  # the bar of the 12 batches of an epoch
    assert err.rstrip().splitlines()[-1].startswith("run directory")  # the final table, after the bar is gone


def test_progress_bar_stays_away_from_short_epochs(toy_runtime, tmp_path, capsys, monkeypatch):
    from dlguide._callbacks import ProgressReporter

    monkeypatch.setattr(ProgressReporter, "DELAY_S", 60.0)  # no epoch lasts that long
    run_task("example.sine", overrides=[*FAST, "epochs=2"], out=tmp_path / "run", runtime=toy_runtime,
             progress="bar")
    err = capsys.readouterr().err
    assert "epoch 1/2  train/loss" in err and "epoch 2/2  train/loss" in err
    assert "epoch 1/2:" not in err and "batch/s" not in err and "\r" not in err


def test_final_metrics_are_those_of_the_best_epoch(tmp_path, capsys):
    """The tested weights are the best epoch's, so metrics.json gives that epoch's train and val
    figures beside the test ones (not the last epoch's), names the epoch, and so does the table."""
    out = tmp_path / "run"
    result = run_task("example.sine", overrides=["epochs=5", "samples=128", "lr=0.3", "seed=1"], out=out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = min(rows, key=lambda r: r["val/loss"])
    assert best["epoch"] != rows[-1]["epoch"]  # this setting overshoots after its best epoch
    assert result.metrics["best_epoch"] == best["epoch"]
    assert result.metrics["val/loss"] == best["val/loss"] and result.metrics["train/loss"] == best["train/loss"]
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == best["epoch"]
    assert f"best epoch {best['epoch']} of 5 by val/loss" in capsys.readouterr().err


def test_a_monitor_the_task_does_not_make_is_refused_before_training(tmp_path):
    epochs = []

    class Count:
        @hookimpl
        def dlguide_epoch_start(self, trainer, epoch):
            epochs.append(epoch)

    with pytest.raises(UsageError, match=r"^monitor 'val/acc' is not among this task's validation metrics: "
                                         r"val/loss, val/mae, val/r2$"):
        run_task("example.sine", overrides=["monitor=val/acc", "monitor_mode=max", "samples=256"],
                 out=tmp_path / "run", plugins={"count": Count()})
    assert epochs == [] and not (tmp_path / "run").exists()
