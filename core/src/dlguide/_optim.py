"""Optimizers and learning-rate schedules by name, as chapter 1 teaches them.

A schedule is a function of the optimizer step and the config (nanoGPT's ``get_lr``), not a
pickled scheduler object: a resumed run rebuilds it from its config, so ``--set epochs=N``
re-plans onecycle and cosine over the new length and ``--set lr=X`` takes effect. Only what
cannot be recomputed is saved: the step count and, for plateau, its running state.
The formulas are torch's (``OneCycleLR``, ``CosineAnnealingLR``, ``StepLR``,
``ReduceLROnPlateau``), checked against them by the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from dlguide._errors import UsageError
from dlguide._task import OPTIMIZERS, TrainConfig

#: OneCycleLR's defaults: start at max_lr / 25, end at that / 1e4, cycle momentum 0.95 -> 0.85 -> 0.95
ONECYCLE_DIV, ONECYCLE_FINAL_DIV, MOMENTUM_LOW, MOMENTUM_HIGH = 25.0, 1e4, 0.85, 0.95
#: ReduceLROnPlateau's defaults: relative threshold, no cooldown, no floor
PLATEAU_THRESHOLD, PLATEAU_EPS = 1e-4, 1e-8


def build_optimizer(cfg: TrainConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    """``sgd``, ``momentum``, ``nesterov``, ``adam``, ``adamw`` or ``rmsprop`` at ``cfg.lr``."""
    name, lr, wd = cfg.optimizer, cfg.lr, cfg.weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=True, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    raise UsageError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def _anneal(start: float, end: float, pct: float) -> float:
    """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimizer step ``step`` (0 = the first) as a multiple of the base rate."""
    total = max(1, steps_per_epoch * cfg.epochs)
    name = cfg.scheduler
    if name == "onecycle":
        peak_at = max(min(cfg.warmup_steps / total if cfg.warmup_steps else 0.3, 0.99), 0.01) * total - 1
        low, end = 1.0 / ONECYCLE_DIV, 1.0 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
        if step <= peak_at:
            return _anneal(low, 1.0, step / peak_at)
        return _anneal(1.0, end, min(1.0, (step - peak_at) / ((total - 1) - peak_at)))
    warmup = min(cfg.warmup_steps, total - 1)
    if step < warmup:
        start = 1.0 / (warmup + 1)
        return start + (1.0 - start) * step / warmup
    after = step - warmup
    if name == "step":
        every = max(1, (cfg.lr_step_epochs or max(1, cfg.epochs // 3)) * steps_per_epoch)
        return cfg.lr_gamma ** (after // every)
    if name == "cosine":
        span = max(1, total - warmup)
        return _anneal(1.0, 0.0, min(after, span) / span)
    return 1.0  # none, plateau (its reductions are kept apart)


def momentum_of(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float | None:
    """onecycle's momentum (SGD's momentum, Adam's beta1) at ``step``; None for other schedules."""
    if cfg.scheduler != "onecycle":
        return None
    total = max(1, steps_per_epoch * cfg.epochs)
    peak_at = max(min(cfg.warmup_steps / total if cfg.warmup_steps else 0.3, 0.99), 0.01) * total - 1
    if step <= peak_at:
        return _anneal(MOMENTUM_HIGH, MOMENTUM_LOW, step / peak_at)
    return _anneal(MOMENTUM_LOW, MOMENTUM_HIGH, min(1.0, (step - peak_at) / ((total - 1) - peak_at)))


class Schedule:
    """One optimizer's learning rate as a function of its step count and the config.

    The base rate of each parameter group is the one the optimizer was built with from the
    current config; ``step()`` follows every optimizer step, ``epoch_end(value)`` every epoch
    (plateau). ``state_dict`` holds the step count and plateau's state only.
    """

    def __init__(self, cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                 mode: str = "min") -> None:
        self.cfg, self.optimizer, self.steps_per_epoch, self.mode = cfg, optimizer, max(1, steps_per_epoch), mode
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.steps = 0
        # plateau: reductions so far as a factor, the best value seen and the epochs since it
        self.plateau_factor = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        self._momentum_key = None
        if cfg.scheduler == "onecycle":
            defaults = optimizer.defaults
            self._momentum_key = "betas" if "betas" in defaults else "momentum" if "momentum" in defaults else None
        self.apply()

    def lr(self, group: int = 0) -> float:
        return self.base_lrs[group] * lr_factor(self.cfg, self.steps, self.steps_per_epoch) * self.plateau_factor

    def apply(self) -> None:
        """Set every parameter group's rate (and onecycle's momentum) for the current step."""
        factor = lr_factor(self.cfg, self.steps, self.steps_per_epoch) * self.plateau_factor
        momentum = momentum_of(self.cfg, self.steps, self.steps_per_epoch) if self._momentum_key else None
        for base, group in zip(self.base_lrs, self.optimizer.param_groups):
            group["lr"] = base * factor
            if momentum is not None:
                if self._momentum_key == "betas":
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum

    def step(self) -> None:
        self.steps += 1
        self.apply()

    def epoch_end(self, monitored: float | None) -> None:
        """plateau: reduce the rate by ``lr_gamma`` after ``lr_patience`` epochs without improvement."""
        if self.cfg.scheduler != "plateau" or monitored is None or math.isnan(monitored):
            return
        value = float(monitored)
        if self.best is None or (value < self.best * (1 - PLATEAU_THRESHOLD) if self.mode == "min"
                                 else value > self.best * (1 + PLATEAU_THRESHOLD)):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.cfg.lr_patience:
            old = self.lr()
            if old - old * self.cfg.lr_gamma > PLATEAU_EPS:
                self.plateau_factor *= self.cfg.lr_gamma
                self.apply()
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "plateau_factor": self.plateau_factor, "best": self.best,
                "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved step count (and plateau state) under the current config."""
        self.steps = int(state["steps"])
        self.plateau_factor = float(state.get("plateau_factor", 1.0))
        self.best = state.get("best")
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.apply()
