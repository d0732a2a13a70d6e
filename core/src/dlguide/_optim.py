"""Optimizers and learning-rate schedules by name, as chapter 1 teaches them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dlguide._errors import UsageError
from dlguide._task import OPTIMIZERS, TrainConfig


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


class Schedule:
    """One optimizer's schedule: ``step()`` after every optimizer step, ``epoch_end(value)`` per epoch."""

    def __init__(self, cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        self.name = cfg.scheduler
        total = max(1, steps_per_epoch * cfg.epochs)
        warmup = min(cfg.warmup_steps, total - 1) if cfg.scheduler != "onecycle" else 0
        S = torch.optim.lr_scheduler
        main: Any = None
        if cfg.scheduler == "step":
            epochs = cfg.lr_step_epochs or max(1, cfg.epochs // 3)
            main = S.StepLR(optimizer, step_size=max(1, epochs * steps_per_epoch), gamma=cfg.lr_gamma)
        elif cfg.scheduler == "cosine":
            main = S.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
        elif cfg.scheduler == "onecycle":
            pct = cfg.warmup_steps / total if cfg.warmup_steps else 0.3
            main = S.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=min(max(pct, 0.01), 0.99))
        elif cfg.scheduler == "plateau":
            self.plateau = S.ReduceLROnPlateau(
                optimizer, mode=cfg.resolved_monitor_mode, factor=cfg.lr_gamma, patience=cfg.lr_patience
            )
        if warmup:
            ramp = S.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
            main = S.SequentialLR(optimizer, [ramp, main], milestones=[warmup]) if main is not None else ramp
        self.per_step = main
        if cfg.scheduler != "plateau":
            self.plateau = None

    def step(self) -> None:
        if self.per_step is not None:
            self.per_step.step()

    def epoch_end(self, monitored: float | None) -> None:
        if self.plateau is not None and monitored is not None:
            self.plateau.step(monitored)

    def state_dict(self) -> dict[str, Any]:
        return {
            "per_step": self.per_step.state_dict() if self.per_step is not None else None,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.per_step is not None and state.get("per_step") is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
