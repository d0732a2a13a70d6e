"""example.sine: a small MLP learns y = sin(x) + noise from 1,024 seeded points.

    dlguide run example.sine --set epochs=20 hidden=64 --out runs/sine
    dlguide predict runs/sine 0.5 1.57
"""

from __future__ import annotations

import dataclasses

import torch
import torchmetrics
from torch import nn
from torch.utils.data import TensorDataset

from dlguide import DataSplits, RawInput, Task, TrainConfig, UsageError, cv_fold, option


@dataclasses.dataclass
class SineConfig(TrainConfig):
    samples: int = option(1024, "points drawn uniformly from [-pi, pi]")
    noise: float = option(0.1, "standard deviation of the noise added to sin(x)")
    hidden: int = option(32, "units in each of the two hidden layers")
    dropout: float = option(0.1, "dropout after each hidden layer")
    batch_size: int = option(32, "samples per batch")
    lr: float = option(0.01, "learning rate")


class SineRegression(Task):
    Config = SineConfig
    metric_modes = {"mae": "min", "r2": "max"}
    input_kind = "json"  # numbers on the command line, JSON values over HTTP
    supports_folds = True  # build_data takes its fold from dlguide.cv_fold

    def build_data(self) -> DataSplits:
        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed)  # the data depend on the seed only
        x = (torch.rand(cfg.samples, 1, generator=g) * 2 - 1) * torch.pi
        y = torch.sin(x) + cfg.noise * torch.randn(cfg.samples, 1, generator=g)
        n_val = n_test = cfg.samples // 8
        n_train = cfg.samples - n_val - n_test
        train, val = list(range(n_train)), list(range(n_train, n_train + n_val))
        folds = cv_fold(cfg, [0] * (n_train + n_val))  # dlguide cv: a fold of train + val held out instead
        if folds is not None:
            train, val = folds
        return DataSplits(
            train=TensorDataset(x[train], y[train]),
            val=TensorDataset(x[val], y[val]),
            test=TensorDataset(x[n_train + n_val:], y[n_train + n_val:]),
        )

    def build_model(self) -> nn.Module:
        h, p = self.config.hidden, self.config.dropout
        return nn.Sequential(nn.Linear(1, h), nn.Tanh(), nn.Dropout(p), nn.Linear(h, h), nn.Tanh(),
                             nn.Dropout(p), nn.Linear(h, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y)

    def configure_metrics(self, stage):
        return {"mae": torchmetrics.MeanAbsoluteError(), "r2": torchmetrics.R2Score()}

    def validation_step(self, batch, metrics):
        """Also the test step (the default): there it records each point's squared error for ``dlguide compare``."""
        x, y = batch
        pred = self.model(x)
        for metric in metrics.values():
            metric.update(pred, y)
        self.run.record(loss=(pred - y).square().flatten())  # does nothing outside the test pass
        return nn.functional.mse_loss(pred, y)

    # -- inference: decode -> predict_step (the default: self.model(batch)) -> encode ----
    def decode(self, raw: RawInput) -> torch.Tensor:
        try:
            x = float(raw.value)
        except (TypeError, ValueError):
            raise UsageError(f"example.sine predicts from numbers, not {raw.label!r}") from None
        return torch.tensor([x])

    def reference_inputs(self, data, count):
        """Test points as the numbers a client sends."""
        xs = [float(data.test[i][0][0]) for i in range(min(count, len(data.test)))]
        return [RawInput(value=x, name=repr(x)) for x in xs]

    def encode(self, output, sample, raw, *, out_dir=None):
        """The prediction and the truth; the core puts the input, x, first (``"input": 0.5``)."""
        return {"y": round(float(output[0]), 4), "sin(x)": round(float(torch.sin(sample[0])), 4)}
