"""vision.gan: a short real run on digits with its per-epoch grids and gan/... metrics,
generate through the CLI, and the classifier-based quality figures on known inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dlguide._cli import main
from dlguide._errors import UsageError
from dlguide._runs import load_run, run_task
from dlguide_vision.gan_models import DCGAN, layout
from dlguide_vision.gan_quality import ClassifierScorer, frechet_distance, sample_quality


@pytest.fixture(scope="module")
def gan_run(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("gan") / "run"
    run_task("vision.gan", overrides=["epochs=2", "classifier_epochs=3", "quality_samples=200", "seed=0"], out=out,
             runtime=runtime, progress="none")
    return out


@pytest.mark.parametrize("size,start,doublings", [(8, 4, 1), (28, 7, 2), (32, 4, 3)])
@pytest.mark.parametrize("extra_layers", [0, 1])
def test_dcgan_is_sized_to_the_images(size, start, doublings, extra_layers):
    assert layout(size) == (start, doublings)
    gan = DCGAN(16, 3 if size == 32 else 1, size, 8, 8, extra_layers=extra_layers)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in gan.generator.modules())
    assert convs == extra_layers  # the extra layers are the generator's only plain convolutions
    with torch.no_grad():
        images = gan.sample(torch.randn(4, 16))
    assert images.shape == (4, 3 if size == 32 else 1, size, size)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert gan.discriminator(images * 2 - 1).shape == (4,)


def test_samples_come_from_the_moving_average_of_the_generator():
    plain = DCGAN(8, 1, 8, 4, 4)
    assert plain.sampler() is plain.generator and plain.generator_ema is None  # ema off: the training generator
    gan = DCGAN(8, 1, 8, 4, 4, ema=True)
    assert gan.sampler() is gan.generator_ema
    assert not any(p.requires_grad for p in gan.generator_ema.parameters())
    with torch.no_grad():
        for p in gan.generator.parameters():
            p.add_(1.0)
        for b in gan.generator.buffers():
            b.add_(3)
    before = [p.clone() for p in gan.generator_ema.parameters()]
    gan.update_ema(0.75)  # a quarter of the way towards the generator
    for old, new, target in zip(before, gan.generator_ema.parameters(), gan.generator.parameters()):
        assert torch.allclose(new, old + 0.25 * (target - old))
    for mine, theirs in zip(gan.generator_ema.buffers(), gan.generator.buffers()):
        assert torch.equal(mine, theirs)  # batch-norm statistics are copied, not averaged


def test_run_writes_grids_quality_metrics_and_its_classifier(gan_run):
    metrics = json.loads((gan_run / "metrics.json").read_text())
    for key in ("gan/confidence_mean", "gan/confident_share", "gan/class_entropy", "gan/frechet_distance",
                "gan/frechet_distance_untrained", "test/frechet_distance", "val/frechet_distance"):
        assert math.isfinite(metrics[key]), key
    assert metrics["gan/samples"] == 200
    shares = [metrics[f"gan/class_share/{c}"] for c in range(10)]
    assert sum(shares) == pytest.approx(1.0)
    assert sorted(p.name for p in (gan_run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert Image.open(gan_run / "samples" / "epoch_001.png").size[0] >= 8 * 64
    assert (gan_run / "samples.png").is_file() and (gan_run / "class_histogram.png").is_file()
    assert (gan_run / "classifier" / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (gan_run / "metrics.jsonl").read_text().splitlines()]
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} <= set(rows[0])


def test_generate_writes_images_and_grid(gan_run, tmp_path, capsys):
    assert main(["generate", str(gan_run), "--n", "5", "--out", str(tmp_path / "gen"), "--seed", "3"]) == 0
    assert "wrote 5 images and grid.png" in capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert files == ["grid.png", *(f"sample_{i:04d}.png" for i in range(5))]
    assert Image.open(tmp_path / "gen" / "sample_0000.png").size == (8, 8)
    again = load_run(gan_run).sample(5, 3)
    first = torch.from_numpy(np.array(Image.open(tmp_path / "gen" / "sample_0000.png").convert("L"))).float()
    assert torch.allclose(first / 255, again[0, 0], atol=1 / 255 + 1e-6)


def test_generate_refuses_a_classifier_run_and_a_bad_count(gan_run, tmp_path, capsys):
    assert main(["generate", str(gan_run / "classifier"), "--out", str(tmp_path / "g")]) == 2
    assert "is a vision.classify run; generate needs a vision.gan run" in capsys.readouterr().err
    assert main(["generate", str(gan_run), "--n", "0", "--out", str(tmp_path / "g")]) == 2


def test_quality_figures_on_known_inputs(gan_run):
    scorer = ClassifierScorer(load_run(gan_run / "classifier"))
    task = load_run(gan_run)
    images = task.sample(64, 0)
    # the same images on both sides: Frechet distance zero
    features = torch.cat([scorer.score(images)[0]])
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-3)
    # shifting every feature by d moves the Gaussians' means apart by d * sqrt(dims)
    shifted = frechet_distance(features, features + 0.5)
    assert shifted == pytest.approx(0.25 * features.shape[1], rel=1e-3)
    q = sample_quality(scorer, images, images)
    assert q["frechet_distance"] == pytest.approx(0.0, abs=1e-3)
    assert q["confidence_mean"] == pytest.approx(q["real_confidence_mean"], abs=1e-6)
    assert 0 <= q["class_entropy"] <= q["class_entropy_max"] == pytest.approx(math.log(10))


def test_classifier_of_other_images_is_refused(gan_run, runtime, tmp_path):
    with pytest.raises(UsageError, match="was trained on 1x8x8 images; this GAN makes 1x16x16"):
        run_task("vision.gan", overrides=["epochs=1", "image_size=16", f"classifier={gan_run / 'classifier'}"],
                 out=tmp_path / "r", runtime=runtime, progress="none")


@pytest.mark.parametrize("setting,message", [("ema_decay=1", "'ema_decay': 1.0; expected a number in \\[0, 1\\)"),
                                             ("label_smoothing=0.5", "'label_smoothing'"),
                                             ("g_features=0", "'g_features'")])
def test_bad_settings_are_one_line_errors(runtime, tmp_path, setting, message):
    with pytest.raises(UsageError, match=message):
        run_task("vision.gan", overrides=[setting], out=tmp_path / "run", runtime=runtime, progress="none")
    assert not (tmp_path / "run").exists()
