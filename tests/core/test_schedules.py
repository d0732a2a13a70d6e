"""Learning-rate schedules are functions of the step and the config: equal to torch's schedulers
on a plain run, rebuilt from the config on resume (so a run can be extended and its rate changed),
and exact when an interrupted run resumes."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from dlguide_example.sine import SineConfig

from dlguide import UsageError, resume_run, run_task
from dlguide._checkpoint import load_checkpoint
from dlguide._config import resolve
from dlguide._errors import RunInterrupted
from dlguide._optim import Schedule, build_optimizer, lr_factor
from dlguide._task import TrainConfig
from test_trainer import FAST, SignalAt

SCHEDULERS = ("none", "step", "cosine", "onecycle", "plateau")


def config(**keys):
    return resolve(TrainConfig, overrides=[f"{k}={v}" for k, v in keys.items()])


def traces(cfg, optimizer_name, reference, steps_per_epoch, monitored):
    """(ours, torch's): lr and momentum before every step, for the same config."""
    def run(make_schedule):
        opt = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
        sched = make_schedule(opt)
        seen = []
        for epoch in range(cfg.epochs):
            for _ in range(steps_per_epoch):
                group = opt.param_groups[0]
                seen.append((group["lr"], group["betas"][0] if "betas" in group else group.get("momentum")))
                opt.step()
                sched.step() if not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) else None
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(monitored[epoch])
            elif isinstance(sched, Schedule):
                sched.epoch_end(monitored[epoch])
        return seen

    with torch.no_grad():
        return run(lambda opt: Schedule(cfg, opt, steps_per_epoch)), run(reference)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "momentum"])
def test_onecycle_equals_torchs_one_cycle_lr_momentum_included(optimizer):
    cfg = config(scheduler="onecycle", epochs=3, lr=0.1, optimizer=optimizer)
    ours, theirs = traces(cfg, optimizer, lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=3 * 7, pct_start=0.3), 7, [0.0] * 3)
    for (lr, m), (lr_t, m_t) in zip(ours, theirs, strict=True):
        assert lr == pytest.approx(lr_t, rel=1e-9, abs=1e-12) and m == pytest.approx(m_t, rel=1e-9)


def test_cosine_step_and_plateau_equal_torchs_schedulers():
    S = torch.optim.lr_scheduler
    cosine = config(scheduler="cosine", epochs=3, lr=0.1)
    ours, theirs = traces(cosine, "adam", lambda opt: S.CosineAnnealingLR(opt, T_max=30), 10, [0.0] * 3)
    assert [o[0] for o in ours] == pytest.approx([t[0] for t in theirs], rel=1e-6, abs=1e-12)
    step = config(scheduler="step", epochs=4, lr=0.1, lr_step_epochs=1, lr_gamma=0.5)
    ours, theirs = traces(step, "adam", lambda opt: S.StepLR(opt, step_size=10, gamma=0.5), 10, [0.0] * 4)
    assert [o[0] for o in ours] == pytest.approx([t[0] for t in theirs], rel=1e-12)
    values = [1.0, 0.9, 0.95, 0.9, 0.91, 0.95, 0.8, 0.85, 0.85, 0.85]  # improvements, stalls, noise
    plateau = config(scheduler="plateau", epochs=10, lr=0.1, lr_patience=1, lr_gamma=0.5)
    ours, theirs = traces(plateau, "adam", lambda opt: S.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1),
                          2, values)
    assert [o[0] for o in ours] == pytest.approx([t[0] for t in theirs], rel=1e-12)
    assert min(o[0] for o in ours) < 0.1  # the case reduces the rate at least once


def epoch_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_schedule_extends_a_finished_run_over_the_new_length(toy_runtime, tmp_path, scheduler):
    sets = [*FAST, "epochs=2", f"scheduler={scheduler}"]
    out = tmp_path / "run"
    run_task("example.sine", overrides=sets, out=out, runtime=toy_runtime, progress="none")
    resume_run(out, overrides=["epochs=4"], runtime=toy_runtime, progress="none")  # torch's OneCycleLR raised here
    rows = epoch_rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert (out / "metrics.json").is_file()
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["schedules"][0]["steps"] == 4 * 12
    if scheduler in ("cosine", "onecycle"):  # re-planned over 4 epochs: the rate after step 48 of 48
        extended = resolve(SineConfig, overrides=[*sets, "epochs=4"])
        assert rows[-1]["lr"] == pytest.approx(extended.lr * lr_factor(extended, 48, 12), rel=1e-9, abs=1e-15)
        assert rows[2]["lr"] != pytest.approx(rows[1]["lr"])  # the schedule goes on, not frozen at its end


@pytest.mark.parametrize("scheduler", ["step", "onecycle", "plateau"])
def test_an_interrupted_run_resumes_exactly_under_each_schedule(toy_runtime, tmp_path, scheduler):
    sets = [*FAST, "epochs=3", f"scheduler={scheduler}", "lr_step_epochs=1", "lr_patience=0"]
    full = run_task("example.sine", overrides=sets, out=tmp_path / "full", runtime=toy_runtime, progress="none")
    toy_runtime.pm.register(SignalAt(step=17, signum=signal.SIGTERM), name="signaller")
    try:
        with pytest.raises(RunInterrupted):
            run_task("example.sine", overrides=sets, out=tmp_path / "cut", runtime=toy_runtime, progress="none")
    finally:
        toy_runtime.pm.unregister(name="signaller")
    resumed = resume_run(tmp_path / "cut", runtime=toy_runtime, progress="none")
    for key, value in full.metrics.items():
        assert resumed.metrics[key] == pytest.approx(value, abs=1e-6), key
    assert [r["lr"] for r in epoch_rows(tmp_path / "cut")] == pytest.approx([r["lr"] for r in epoch_rows(full.run_dir)])


def test_a_changed_learning_rate_takes_effect_on_resume(toy_runtime, tmp_path):
    out = tmp_path / "run"
    run_task("example.sine", overrides=[*FAST, "epochs=2", "lr=0.01"], out=out, runtime=toy_runtime, progress="none")
    resume_run(out, overrides=["epochs=3", "lr=0.002"], runtime=toy_runtime, progress="none")
    rows = epoch_rows(out)
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.01, 0.002])  # not the saved optimizer's rate
    group = load_checkpoint(out / "checkpoints" / "last.ckpt")["optimizers"][0]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.002)
    assert "lr: 0.002" in (out / "config.yaml").read_text()


@pytest.mark.parametrize(("change", "message"), [
    ("hidden=64", "'hidden' cannot change when a run resumes (it was 16); keys that may: "),
    ("scheduler=onecycle", "'scheduler' cannot change when a run resumes (it was 'none')"),
    ("seed=7", "'seed' cannot change when a run resumes (it was 42)"),
])
def test_a_key_that_may_not_change_on_resume_is_refused_in_one_line(toy_runtime, tmp_path, change, message):
    out = tmp_path / "run"
    run_task("example.sine", overrides=[*FAST, "epochs=1"], out=out, runtime=toy_runtime, progress="none")
    before = (out / "config.yaml").read_text()
    with pytest.raises(UsageError) as info:
        resume_run(out, overrides=["epochs=2", change], runtime=toy_runtime, progress="none")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "epochs, lr" in str(info.value) or "early_stopping_patience" in str(info.value)
    assert (out / "config.yaml").read_text() == before  # nothing was written


def test_the_resume_keys_are_applied(toy_runtime, tmp_path):
    out = tmp_path / "run"
    run_task("example.sine", overrides=[*FAST, "epochs=1"], out=out, runtime=toy_runtime, progress="none")
    resume_run(out, overrides=["epochs=2", "early_stopping_patience=3", "checkpoint_interval=0", "num_workers=0",
                               "device=cpu"], runtime=toy_runtime, progress="none")
    text = (out / "config.yaml").read_text()
    assert "early_stopping_patience: 3" in text and "checkpoint_interval: 0.0" in text and "device: cpu" in text
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["callbacks"]["early_stopping"]["wait"] >= 0
