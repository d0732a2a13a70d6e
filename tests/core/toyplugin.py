"""Tasks that exist only to drive the Trainer into its corners (NaN, manual optimization)."""

from __future__ import annotations

import dataclasses

import torch
from dlguide_example.sine import SineConfig, SineRegression
from torch import nn

from dlguide import hookimpl
from dlguide._config import option


@dataclasses.dataclass
class NaNConfig(SineConfig):
    nan_at_step: int = option(30, "training batch (counted over the run) whose loss becomes NaN")


class NaNTask(SineRegression):
    """example.sine whose loss turns NaN at one chosen training batch."""

    Config = NaNConfig

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.seen = getattr(self, "seen", 0) + 1
        return loss * float("nan") if self.seen == self.config.nan_at_step else loss


class BodyHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, 16), nn.Tanh())
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.body(x))


class TwoOptimizerTask(SineRegression):
    """Two halves of a model, each with its own optimizer, stepped by the task itself (as a GAN does)."""

    automatic_optimization = False

    def build_model(self):
        return BodyHead()

    def configure_optimizers(self):
        return [torch.optim.Adam(self.module.body.parameters(), lr=0.01),
                torch.optim.SGD(self.module.head.parameters(), lr=0.05, momentum=0.9)]

    def _forward(self, x):
        return self.model(x)  # through the (possibly wrapped) model

    def training_step(self, batch, batch_idx):
        x, y = batch
        trainer = self.run  # the run's context: optimizers, backward and optimizer_step through the Strategy
        body_opt, head_opt = trainer.optimizers
        body_opt.zero_grad()
        loss_body = nn.functional.mse_loss(self._forward(x), y)
        trainer.backward(loss_body)
        trainer.optimizer_step(body_opt)
        head_opt.zero_grad()
        loss_head = nn.functional.mse_loss(self._forward(x), y)
        trainer.backward(loss_head)
        trainer.optimizer_step(head_opt)
        return {"loss": loss_head.detach(), "body_loss": loss_body.detach()}

    def final_metrics(self, metrics):
        # measured on the final model, in eval mode and without gradients
        assert not self.model.training and not torch.is_grad_enabled()
        return {"toy/head_weight_norm": float(self.module.head.weight.norm()), "toy/protocol": "two optimizers"}

    def validation_step(self, batch, metrics):
        x, y = batch
        pred = self._forward(x)
        for m in metrics.values():
            m.update(pred, y)
        return nn.functional.mse_loss(pred, y)


@dataclasses.dataclass
class CountingConfig(SineConfig):
    resettable: bool = option(True, "give the Trainer metrics it can reset (False: ones it must make afresh)")


class Count:
    """A metric of the smallest kind: update, compute, to; no reset."""

    def __init__(self):
        self.n = 0

    def to(self, device):
        return self

    def update(self, x):
        self.n += len(x)

    def compute(self):
        return torch.tensor(float(self.n))


class CountingTask(SineRegression):
    """example.sine that counts the samples of every evaluation pass and the calls it gets."""

    Config = CountingConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configured: list[str] = []
        self.started: list[str] = []

    def configure_metrics(self, stage):
        import torchmetrics

        self.configured.append(stage)
        return {"seen": torchmetrics.SumMetric() if self.config.resettable else Count()}

    def on_evaluation_start(self, stage):
        self.started.append(stage)

    def validation_step(self, batch, metrics):
        x, y = batch
        metrics["seen"].update(torch.ones(len(x)) if self.config.resettable else x)
        return nn.functional.mse_loss(self.model(x), y)


@dataclasses.dataclass
class ChoiceConfig(SineConfig):
    model: str = option("narrow", "a network registered for toy.choice", registry="model")


class ChoiceTask(SineRegression):
    """example.sine whose network is built by name through the registry."""

    Config = ChoiceConfig

    def build_model(self):
        return self.build_registered_model(self.config.model)


def narrow(config, meta):
    return nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))


def wide(config, meta):
    return nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 1))


class RecordingTask(SineRegression):
    """example.sine that counts its predict_step calls and the lifecycle methods it gets."""

    predict_steps = 0

    def predict_step(self, batch):
        type(self).predict_steps += 1
        return super().predict_step(batch)

    def on_fit_start(self):
        type(self).calls = [("fit_start", self.run.epoch, self.run.run_dir.name, self.run.is_writer)]

    def on_epoch_end(self, epoch, metrics):
        type(self).calls.append(("epoch_end", epoch, round(metrics["train/loss"], 6)))
        if epoch == 1 and self.config.epochs > 2:
            self.run.stop("the toy stops after its first epoch")


@hookimpl
def dlguide_register(registry):
    registry.add_task("toy.choice", "toyplugin:ChoiceTask", "sine regression with a network chosen by name")
    registry.add_model("toy.narrow", "toyplugin:narrow", "four hidden units", tasks="toy.choice")
    registry.add_model("toy.wide", "toyplugin:wide", "64 hidden units", tasks=("toy.choice",))
    registry.add_model("toy.unlisted", "toyplugin:wide", "registered for no task")
    registry.add_task("toy.recording", "toyplugin:RecordingTask", "sine regression that records what it is called")
    registry.add_task("toy.counting", "toyplugin:CountingTask", "sine regression that counts its evaluation passes")
    registry.add_task("toy.nan", "toyplugin:NaNTask", "sine regression whose loss turns NaN")
    registry.add_task("toy.twoopt", "toyplugin:TwoOptimizerTask", "sine regression with two self-driven optimizers")
