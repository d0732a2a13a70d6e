"""vision.gan: DCGAN image generation (chapter 4.2), judged by a classifier of the same data.

    dlguide run vision.gan --out runs/gan                           # sklearn's 8x8 digits
    dlguide run vision.gan --set dataset=mnist epochs=8 --out runs/mnist-gan
    dlguide predict runs/gan 0 1 2 --out samples/                  # one image per seed: sample_seed<S>.png
    dlguide generate runs/gan --n 64 --out samples/                # seeds 0..63 and their grid.png

The task steps its two optimizers itself: the discriminator on real and generated images,
then the generator against the updated discriminator. A grid of the same 64 noise vectors
is drawn after every epoch (``samples/epoch_NNN.png``), so a person can watch it learn.
Every pass goes through the run's wrapped model, ``self.model(x, mode=...)`` (see
``dlguide_vision.gan_models``).

Quality is measured by a ``vision.classify`` model of the same data (``classifier=RUN``,
or trained on the fly into ``<run>/classifier``): see ``dlguide_vision.gan_quality``. Per
epoch on the validation split, and once at the end as ``gan/...`` in ``metrics.json`` on
``quality_samples`` generated images against the test split.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics import MeanMetric
from torchvision.transforms.v2 import functional as TF

from dlguide import (DataSplits, RawInput, RunInterrupted, Task, UsageError, build_optimizer, first_line, load_run,
                     model_device, predict, resume_run, run_task)
from dlguide_vision.config import ImageGenerationConfig, load_task_images
from dlguide_vision.datasets import ImageDataset
from dlguide_vision.gan_models import layout
from dlguide_vision.gan_quality import CONFIDENT, ClassifierScorer, frechet_metric, prefixed, sample_quality

GRID = 64  # samples in the per-epoch grid: 8 x 8
MAX_SEED = 2**63  # seeds of torch.Generator.manual_seed that every platform takes




def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Stored images (uint8 or float in [0, 1]) as float in [0, 1]."""
    return TF.to_dtype(images, torch.float32, scale=True)


class ImageGenerationTask(Task):
    """Train a DCGAN on an image data set and measure its samples with a classifier."""

    Config = ImageGenerationConfig
    config: ImageGenerationConfig
    automatic_optimization = False
    metric_modes: ClassVar[Mapping[str, str]] = {"frechet_distance": "min", "confidence": "max",
                                                 "confident_share": "max"}
    # predict: a seed -> one generated image, written as sample_seed<seed>.png
    input_kind = "json"
    writes_files = True

    def __init__(self, config: ImageGenerationConfig, name: str = "") -> None:
        super().__init__(config, name)
        self.scorer: ClassifierScorer | None = None
        self.test_images: torch.Tensor | None = None
        self.quality: dict[str, Any] = {}
        self._eval_noise: torch.Generator | None = None

    # -- data and model -----------------------------------------------------------------
    def build_data(self) -> DataSplits:
        cfg = self.config
        data = load_task_images(self)
        try:
            layout(data.image_size)
        except ValueError as exc:
            raise UsageError(f"{exc} (set image_size)") from None
        for split in ("val", "test"):
            if split not in data.splits:
                raise UsageError(f"vision.gan scores samples against a {split} split; raise {split}_fraction above 0")
        self.meta = {"dataset": cfg.dataset, "classes": data.classes, "channels": data.channels,
                     "image_size": data.image_size,
                     "sizes": {name: len(labels) for name, (_, labels) in data.splits.items()}}
        self.scorer = self._scorer()
        self.test_images = data.splits["test"][0]
        return DataSplits(*(ImageDataset(*data.splits[s]) for s in ("train", "val", "test")))

    def _scorer(self) -> ClassifierScorer:
        """The judging classifier: the one named in the config, or one trained now into the run
        directory (a run inside this run, which leaves this run's random stream as it found it)."""
        cfg, run = self.config, self.run
        assert run is not None
        path = cfg.classifier or run.run_dir / "classifier"
        # what the first process sees decides for all: it alone writes the classifier's run
        finished, started = run.broadcast(((path / "model.safetensors").is_file(), (path / "config.yaml").is_file()))
        if cfg.classifier is None and not finished:
            epochs = cfg.classifier_epochs or (20 if cfg.dataset == "digits" else 3)
            if run.verbose:
                doing = "continuing" if started else "training"
                print(f"{self.name}: {doing} the scoring classifier (vision.classify, {epochs} epochs) in {path}",
                      file=sys.stderr, flush=True)
            try:
                if started:  # this run was stopped while its classifier trained: that run goes on
                    resume_run(path, progress=run.progress, runtime=run.runtime)
                else:
                    run_task("vision.classify", out=path, progress=run.progress, runtime=run.runtime,
                             base={"dataset": cfg.dataset, "data_dir": cfg.data_dir, "download": cfg.download,
                                   "image_size": self.meta["image_size"], "image_channels": self.meta["channels"],
                                   "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction,
                                   "seed": cfg.seed, "deterministic": cfg.deterministic, "device": cfg.device,
                                   "epochs": epochs})
            except RunInterrupted as exc:  # one 'dlguide resume' of this run continues both
                raise RunInterrupted(f"{first_line(exc).split(';')[0]} while the scoring classifier trained; "
                                     f"continue with: dlguide resume {run.run_dir}", exc.exit_code - 128) from None
        judge = load_run(path, runtime=run.runtime)
        if judge.name != "vision.classify":
            raise UsageError(f"classifier {path} is a {judge.name} run; expected a vision.classify run")
        scorer = ClassifierScorer(judge)
        scorer.check_fits(int(self.meta["channels"]), int(self.meta["image_size"]), self.meta["classes"], str(path))
        return scorer

    def build_model(self) -> nn.Module:
        """The registered model ``config.model`` (see ``dlguide_vision.gan_models`` for what it must offer)."""
        return self.build_registered_model(self.config.model)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """One optimizer per player, generator first."""
        cfg, gan = self.config, self.module
        assert gan is not None

        def make(module: nn.Module) -> torch.optim.Optimizer:
            if cfg.optimizer in ("adam", "adamw"):
                cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
                return cls(module.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999), weight_decay=cfg.weight_decay)
            return build_optimizer(cfg, module.parameters())

        return [make(gan.generator), make(gan.discriminator)]

    # -- steps --------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        run, gan = self.run, self.model
        assert run is not None and gan is not None and self.module is not None
        g_opt, d_opt = run.optimizers
        real = to_unit(batch[0]) * 2 - 1
        n = len(real)
        bce = nn.functional.binary_cross_entropy_with_logits
        real_target = torch.full((n,), 1.0 - self.config.label_smoothing, device=real.device)
        zeros, ones = torch.zeros(n, device=real.device), torch.ones(n, device=real.device)

        # the discriminator: real images towards 1 (or 1 - smoothing), generated ones towards 0
        with run.autocast():
            # noise is drawn for the whole global batch and each process keeps its rows: several
            # processes draw what one process draws, not the same noise each
            begin, end, total = run.batch_rows
            noise = torch.randn(total, self.config.latent_dim, device=real.device)[begin:end]
            fake = gan(noise, mode="generate")
            d_real, d_fake = gan(real, mode="discriminate"), gan(fake.detach(), mode="discriminate")
            d_loss = bce(d_real.float(), real_target) + bce(d_fake.float(), zeros)
        d_opt.zero_grad(set_to_none=True)
        run.backward(d_loss)
        run.optimizer_step(d_opt)

        # the generator: make the updated discriminator call its images real (the non-saturating loss)
        with run.autocast():
            g_loss = bce(gan(fake, mode="discriminate").float(), ones)
        g_opt.zero_grad(set_to_none=True)
        run.backward(g_loss)
        run.optimizer_step(g_opt)
        d_opt.zero_grad(set_to_none=True)  # the generator's backward pass went through the discriminator too
        # the average starts fast and slows to ema_decay (TensorFlow's num_updates warm-up), so
        # that a run of a few hundred steps is not averaged over its random start
        step = run.global_step
        self.module.update_ema(min(self.config.ema_decay, (1 + step) / (10 + step)))
        return {"loss": (d_loss + g_loss).detach(), "d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                "d_real": d_real.detach().float().sigmoid().mean(), "d_fake": d_fake.detach().float().sigmoid().mean()}

    def configure_metrics(self, stage: str) -> dict[str, Any]:
        assert self.scorer is not None
        return {"frechet_distance": frechet_metric(self.scorer.num_features), "confidence": MeanMetric(),
                "confident_share": MeanMetric()}

    def on_evaluation_start(self, stage: str) -> None:
        # the same noise in every evaluation pass, drawn apart from the training stream
        self._eval_noise = torch.Generator().manual_seed(self.config.seed + 1)

    def validation_step(self, batch: Any, metrics: Mapping[str, Any]) -> None:
        assert self.scorer is not None and self._eval_noise is not None
        real = to_unit(batch[0])
        noise = torch.randn(len(real), self.config.latent_dim, generator=self._eval_noise).to(real.device)
        real_features, _ = self.scorer.score(real)
        fake_features, probs = self.scorer.score(self.model(noise, mode="sample").float())
        metrics["frechet_distance"].update(real_features, real=True)
        metrics["frechet_distance"].update(fake_features, real=False)
        top = probs.max(1).values
        metrics["confidence"].update(top)
        metrics["confident_share"].update((top >= CONFIDENT).float())
        return None

    # -- sampling -----------------------------------------------------------------------
    # -- export: the generator that makes the samples; noise in, images in [-1, 1] out ---------------
    export_input_names = ("noise",)
    export_output_names = ("image",)

    @property
    def export_module(self) -> str:  # type: ignore[override]
        return "model.generator_ema" if getattr(self.module, "generator_ema", None) is not None else "model.generator"

    reference_from_data = False

    def reference_inputs(self, data: DataSplits | None, count: int) -> list[RawInput]:
        """Seeds 0, 1, ... as a client sends them."""
        return [RawInput(value=seed, name=str(seed)) for seed in range(count)]

    def noise(self, n: int, seed: int) -> torch.Tensor:
        """``n`` noise vectors drawn with ``seed`` apart from the training stream (same seed, same vectors)."""
        return torch.randn(n, self.config.latent_dim, generator=torch.Generator().manual_seed(seed))

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` images in [0, 1] from the noise of ``seed``."""
        return generate(self.model, self.noise(n, seed))

    def write_sample_grid(self, path: Path) -> Path:
        """The 64 images of the fixed grid noise, 8 to a row, enlarged to at least 64 pixels a side."""
        from dlguide_vision.figures import save_grid

        return save_grid(self.sample(GRID, self.config.seed + 2), path)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Draw the fixed-noise grid of this epoch (``samples/epoch_NNN.png``)."""
        if self.run is not None and self.run.is_writer:
            self.write_sample_grid(self.run.run_dir / "samples" / f"epoch_{epoch:03d}.png")

    # -- after training -----------------------------------------------------------------
    def final_metrics(self, metrics: Mapping[str, float]) -> dict[str, Any]:
        """``gan/...``: quality of ``quality_samples`` images against the test split, beside an untrained generator."""
        assert self.scorer is not None and self.test_images is not None
        cfg = self.config
        noise = self.noise(cfg.quality_samples, cfg.seed + 3)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            untrained = self.build_model().to(model_device(self.model))
        fake, baseline = generate(self.model, noise), generate(untrained, noise)
        self.quality = sample_quality(self.scorer, fake, to_unit(self.test_images), baseline)
        return prefixed("gan", self.quality)

    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        from dlguide_vision.figures import class_histogram

        written = [self.write_sample_grid(run_dir / "samples.png")]
        if self.quality:
            shares = [self.quality[f"class_share/{c}"] for c in self.meta["classes"]]
            written.append(class_histogram(shares, list(self.meta["classes"]), run_dir / "class_histogram.png",
                                           f"{self.name}: classes of {self.quality['samples']} generated images"))
        return written

    # -- inference: a seed -> one image file -----------------------------------------------
    def decode(self, raw: RawInput) -> torch.Tensor:
        """A seed -> its noise vector (the same seed always gives the same vector, and image)."""
        seed = raw.value
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
            raise UsageError(f"input {raw.label!r} is not a seed; expected an integer in [0, 2**63)")
        return self.noise(1, seed)[0]

    def predict_step(self, batch: torch.Tensor) -> torch.Tensor:
        """Noise -> images in [0, 1], made as every sample of the run is."""
        assert self.model is not None
        return generate(self.model, batch)

    def output_name(self, raw: RawInput) -> str:
        return f"sample_seed{raw.value}.png"

    def encode(self, output: torch.Tensor, sample: Any, raw: RawInput, *,
               out_dir: Path | None = None) -> dict[str, Any]:
        """Write the image as ``out_dir/sample_seed<seed>.png`` at its own size and name it (``file``);
        the core names the input, the seed."""
        from torchvision.utils import save_image

        assert out_dir is not None
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / self.output_name(raw)
        save_image(output, path)
        return {"file": str(path)}

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        return f"seed {row['input']}  ->  {row['file']}"


@torch.no_grad()
def generate(model: nn.Module, noise: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Images in [0, 1] (on the CPU) made by ``model`` (the run's wrapped GAN, or a bare one) in
    eval mode from ``noise``."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(noise[i:i + batch].to(device), mode="sample").float().clamp(0, 1).cpu()
                          for i in range(0, len(noise), batch)])
    finally:
        model.train(was_training)


def generate_images(run: str | Path, n: int, out: str | Path, seed: int = 0, *, runtime: Any = None) -> list[Path]:
    """Predict seeds ``seed`` .. ``seed + n - 1`` into ``out`` (``sample_seed<S>.png``, as
    ``dlguide predict`` does) and draw them as ``grid.png``; returns the paths, the grid last."""
    from dlguide_vision.datasets import read_image
    from dlguide_vision.figures import save_grid

    if n < 1:
        raise UsageError(f"invalid value for --n: {n}; expected an integer >= 1")
    task = load_run(run, runtime=runtime)
    if not isinstance(task, ImageGenerationTask):
        raise UsageError(f"{run} is a {task.name} run; generate needs a vision.gan run")
    folder = Path(out)
    rows = predict(task, [RawInput(value=seed + i, name=str(seed + i)) for i in range(n)], out_dir=folder)
    paths = [Path(row["file"]) for row in rows]
    # the grid shows the files as written (8 bits a channel), read back
    images = torch.stack([read_image(p, int(task.meta["channels"]), 0) for p in paths])
    return [*paths, save_grid(to_unit(images), folder / "grid.png")]
