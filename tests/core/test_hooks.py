"""Every hook is exercised here or in the plugin tests; this file also checks that each
hook spec is documented and tested (a new hook without both fails the suite)."""

from __future__ import annotations

import inspect
import re
import signal
import threading

import pytest

from dlguide import hookimpl, hookspecs
from dlguide._checkpoint import load_checkpoint
from dlguide._errors import RunError, RunInterrupted
from dlguide._runs import resume_run, run_task

SPECS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("dlguide_"))


class Recorder:
    """Implements every run-lifecycle hook and records the calls, and keeps state in checkpoints."""

    def __init__(self):
        self.calls = []
        self.counter = 0
        self.restored = None

    @hookimpl
    def dlguide_run_start(self, trainer):
        self.calls.append(("run_start", trainer.epoch))

    @hookimpl
    def dlguide_epoch_start(self, trainer, epoch):
        self.calls.append(("epoch_start", epoch))

    @hookimpl
    def dlguide_train_batch_end(self, trainer, batch_idx, loss):
        self.counter += 1
        assert not loss.requires_grad

    @hookimpl
    def dlguide_epoch_end(self, trainer, epoch, metrics):
        self.calls.append(("epoch_end", epoch, sorted(k for k in metrics if k.startswith("val/"))))

    @hookimpl
    def dlguide_save_checkpoint(self, trainer, checkpoint):
        checkpoint["callbacks"]["recorder"] = {"counter": self.counter}

    @hookimpl
    def dlguide_load_checkpoint(self, trainer, checkpoint):
        self.restored = checkpoint["callbacks"]["recorder"]["counter"]

    @hookimpl
    def dlguide_checkpoint_saved(self, trainer, path, kind):
        assert path.is_file()
        self.calls.append(("checkpoint_saved", kind, path.name))

    @hookimpl
    def dlguide_run_end(self, trainer, metrics):
        self.calls.append(("run_end", "test/loss" in metrics))

    @hookimpl
    def dlguide_run_exception(self, trainer, exception):
        self.calls.append(("run_exception", type(exception).__name__))


FAST = ["samples=256", "batch_size=32", "hidden=8"]  # 6 training batches per epoch


def test_lifecycle_hooks_are_called_in_order(toy_runtime, tmp_path):
    rec = Recorder()
    toy_runtime.pm.register(rec)
    sets = [*FAST, "epochs=2", "monitor=train/loss", "checkpoint_interval=0", "async_checkpoints=false"]
    run_task("example.sine", overrides=sets, out=tmp_path / "r", runtime=toy_runtime, progress="none")
    assert rec.counter == 12
    assert rec.calls == [
        ("run_start", 0),
        ("epoch_start", 1), ("epoch_end", 1, ["val/loss", "val/mae", "val/r2"]),
        ("checkpoint_saved", "last", "last.ckpt"), ("checkpoint_saved", "best", "best.ckpt"),
        ("epoch_start", 2), ("epoch_end", 2, ["val/loss", "val/mae", "val/r2"]),
        ("checkpoint_saved", "last", "last.ckpt"), ("checkpoint_saved", "best", "best.ckpt"),
        ("run_end", True),
    ]


def test_background_checkpoints_are_announced_from_their_thread_in_order(toy_runtime, tmp_path):
    rec = Recorder()
    threads = []

    class Thread:
        @hookimpl
        def dlguide_checkpoint_saved(self, trainer, path, kind):
            threads.append(threading.current_thread().name)

    toy_runtime.pm.register(rec)
    toy_runtime.pm.register(Thread())
    run_task("example.sine", overrides=[*FAST, "epochs=3", "monitor=train/loss", "checkpoint_interval=0"],
             out=tmp_path / "r", runtime=toy_runtime, progress="none")
    saved = [c for c in rec.calls if c[0] == "checkpoint_saved"]
    assert saved == [("checkpoint_saved", "last", "last.ckpt"), ("checkpoint_saved", "best", "best.ckpt")] * 3
    at = [i for i, c in enumerate(rec.calls) if c[0] == "checkpoint_saved"]
    for epoch in (1, 2, 3):  # each epoch's pair comes after its epoch_end
        end = rec.calls.index(("epoch_end", epoch, ["val/loss", "val/mae", "val/r2"]))
        assert at[2 * epoch - 2] > end
    assert rec.calls[-1] == ("run_end", True)
    assert threads and all(name.startswith("dlguide-checkpoint") for name in threads)
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")["epoch"] == 3


def test_plugin_state_travels_in_checkpoints(toy_runtime, tmp_path):
    rec = Recorder()
    toy_runtime.pm.register(rec, name="recorder")
    run_task("example.sine", overrides=[*FAST, "epochs=1"], out=tmp_path / "r", runtime=toy_runtime,
             progress="none")
    resume_run(tmp_path / "r", overrides=["epochs=2"], runtime=toy_runtime, progress="none")
    assert rec.restored == 6


def test_run_exception_hook_sees_nan_and_interrupts(toy_runtime, tmp_path):
    rec = Recorder()
    toy_runtime.pm.register(rec)
    with pytest.raises(RunError):
        run_task("toy.nan", overrides=[*FAST, "nan_at_step=3"], out=tmp_path / "nan", runtime=toy_runtime,
                 progress="none")
    assert rec.calls[-1] == ("run_exception", "RunError")

    class Stop:
        @hookimpl
        def dlguide_train_batch_end(self, trainer, batch_idx, loss):
            if trainer.global_step == 2:
                signal.raise_signal(signal.SIGTERM)

    toy_runtime.pm.register(Stop())
    with pytest.raises(RunInterrupted, match="SIGTERM received at epoch 1, batch 2"):
        run_task("example.sine", overrides=FAST, out=tmp_path / "int", runtime=toy_runtime, progress="none")
    assert rec.calls[-2:] == [("checkpoint_saved", "interrupt", "last.ckpt"), ("run_exception", "RunInterrupted")]


def test_every_hook_spec_is_documented(root):
    docs = (root / "docs" / "hooks.md").read_text()
    for name in SPECS:
        assert re.search(rf"^### `{name}\(", docs, re.M), f"{name} has no section in docs/hooks.md"
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc.splitlines()) == 1, f"{name} needs a one-sentence docstring"


def test_every_hook_spec_is_tested(root):
    this = __file__
    texts = [p.read_text() for p in (root / "tests").rglob("test_*.py") if str(p) != this]
    texts.append(open(this).read().split("def test_every_hook_spec_is_documented")[0])
    for name in SPECS:
        assert any(f"def {name}(" in t for t in texts), f"no test implements {name}"
