"""Sample quality of a generator, measured with a ``vision.classify`` model of the same data.

No Inception weights can be downloaded here, and Inception was never trained on 8x8 digits
anyway; so the judge is a classifier trained on the very data the GAN learns from:

- ``confidence_mean``: mean top-class probability of generated images (recognisable digits
  score high; smudges spread their probability);
- ``confident_share``: share of generated images classified with probability >= 0.9;
- ``class_entropy`` (nats) and ``class_share/<c>``: how evenly the generated images spread
  over the classes (mode collapse shows as a low entropy and empty classes);
- ``frechet_distance``: the Frechet distance between Gaussians fitted to the classifier's
  penultimate-layer features of generated and real test images (torchmetrics' FID
  arithmetic over these features). It is the recipe of FID with another network, so its
  values are comparable only between runs scored by the same classifier: it is not FID.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from dlguide import UsageError, model_device

CONFIDENT = 0.9


class _Features(nn.Identity):
    """Hands precomputed features to torchmetrics' Frechet arithmetic unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


def frechet_metric(num_features: int) -> FrechetInceptionDistance:
    """A Frechet-distance accumulator over features: ``update(features, real=bool)``."""
    return FrechetInceptionDistance(feature=_Features(num_features), reset_real_features=True)


class ClassifierScorer:
    """A trained ``vision.classify`` task seen as a judge: images in [0, 1] -> (features, probabilities)."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.model: nn.Module = task.model.eval()
        heads = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if not heads:
            raise UsageError("the scoring classifier has no final linear layer to take features from")
        self.head = heads[-1]  # its input is the penultimate representation
        self.num_features = self.head.in_features
        self.classes: list[str] = list(task.meta["classes"])
        self.channels, self.image_size = int(task.meta["channels"]), int(task.meta["image_size"])

    def check_fits(self, channels: int, image_size: int, classes: Sequence[str], where: str) -> None:
        if (self.channels, self.image_size) != (channels, image_size):
            raise UsageError(f"classifier {where} was trained on {self.channels}x{self.image_size}x{self.image_size} "
                             f"images; this GAN makes {channels}x{image_size}x{image_size}")
        if list(classes) != self.classes:
            raise UsageError(f"classifier {where} knows classes {self.classes}; the data has {list(classes)}")

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
        try:
            logits = self.model(self.task.normalize(images.to(model_device(self.model))))
        finally:
            handle.remove()
        return captured[0].float(), logits.float().softmax(1)


def score_all(scorer: ClassifierScorer, images: torch.Tensor, chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and probabilities of many images, scored ``chunk`` at a time."""
    parts = [scorer.score(images[start:start + chunk]) for start in range(0, len(images), chunk)]
    return torch.cat([f for f, _ in parts]), torch.cat([p for _, p in parts])


def frechet_distance(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    metric = frechet_metric(real_features.shape[1])
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    return float(metric.compute())


def sample_quality(scorer: ClassifierScorer, fake: torch.Tensor, real: torch.Tensor,
                   baseline: torch.Tensor | None = None) -> dict[str, Any]:
    """Quality figures of generated images ``fake`` against real images, both in [0, 1].

    ``baseline`` (images of an untrained generator) adds its Frechet distance and the ratio
    to it, the yardstick of how far training moved the samples towards the data.
    """
    real_features, real_probs = score_all(scorer, real)
    fake_features, fake_probs = score_all(scorer, fake)
    conf, predicted = fake_probs.max(1)
    real_conf = real_probs.max(1).values
    shares = torch.bincount(predicted.cpu(), minlength=len(scorer.classes)).float() / len(fake)
    present = shares[shares > 0]
    out: dict[str, Any] = {
        "samples": len(fake),
        "confidence_mean": float(conf.mean()),
        "confident_share": float((conf >= CONFIDENT).float().mean()),
        "class_entropy": float(-(present * present.log()).sum()),
        "class_entropy_max": math.log(len(scorer.classes)),
        "class_share_min": float(shares.min()),
        "class_share_max": float(shares.max()),
        "frechet_distance": frechet_distance(real_features, fake_features),
        "real_confidence_mean": float(real_conf.mean()),
        "real_confident_share": float((real_conf >= CONFIDENT).float().mean()),
    }
    out.update({f"class_share/{name}": float(s) for name, s in zip(scorer.classes, shares)})
    if baseline is not None:
        out["frechet_distance_untrained"] = frechet_distance(real_features, score_all(scorer, baseline)[0])
        out["frechet_improvement"] = out["frechet_distance_untrained"] / max(out["frechet_distance"], 1e-12)
    return out


def prefixed(prefix: str, figures: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}/{key}": value for key, value in figures.items()}
