"""vision.gan: a short real run on digits with its per-epoch grids and gan/... metrics, the
same run scored by a classifier given instead of trained inside it, predict (a seed -> an
image file) and generate through the CLI, and the classifier-based quality figures on
known inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dlguide import UsageError, load_run, predict_run, run_task
from dlguide._cli import main
from dlguide_vision.gan import generate
from dlguide_vision.gan_models import DCGAN, layout
from dlguide_vision.gan_quality import ClassifierScorer, frechet_distance, sample_quality
from dlguide.testing import check_export


GAN_SETTINGS = ["epochs=2", "quality_samples=200", "seed=0"]


@pytest.fixture(scope="module")
def gan_run(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("gan") / "run"
    run_task("vision.gan", overrides=[*GAN_SETTINGS, "classifier_epochs=3"], out=out, runtime=runtime,
             progress="none")
    return out


def read_png(path):
    """A written sample of the grayscale digits GAN as a float tensor ``1 x H x W`` in [0, 1]."""
    return torch.from_numpy(np.array(Image.open(path).convert("L"), dtype=np.float32) / 255)[None]


@pytest.mark.parametrize("size,start,doublings", [(8, 4, 1), (28, 7, 2), (32, 4, 3)])
@pytest.mark.parametrize("extra_layers", [0, 1])
def test_dcgan_is_sized_to_the_images(size, start, doublings, extra_layers):
    assert layout(size) == (start, doublings)
    gan = DCGAN(16, 3 if size == 32 else 1, size, 8, 8, extra_layers=extra_layers)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in gan.generator.modules())
    assert convs == extra_layers  # the extra layers are the generator's only plain convolutions
    with torch.no_grad():
        images = gan(torch.randn(4, 16), mode="sample")
        assert images.shape == (4, 3 if size == 32 else 1, size, size)
        assert 0 <= float(images.min()) and float(images.max()) <= 1
        assert gan(images * 2 - 1, mode="discriminate").shape == (4,)
        assert gan(torch.randn(4, 16), mode="generate").min() >= -1


def test_dcgan_forward_dispatches_by_mode():
    gan = DCGAN(8, 1, 8, 4, 4, ema=True).eval()
    noise = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(gan(noise, mode="generate"), gan.generator(noise))
        assert torch.equal(gan(noise, mode="sample"), (gan.generator_ema(noise) + 1) / 2)
        images = torch.rand(3, 1, 8, 8)
        assert torch.equal(gan(images), gan.discriminator(images))  # discriminate is the default
    with pytest.raises(ValueError, match="unknown DCGAN mode 'nosuch'; expected one of generate, discriminate"):
        gan(noise, mode="nosuch")


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


def test_scores_do_not_depend_on_where_the_classifier_was_trained(gan_run, runtime, tmp_path):
    """Training the classifier inside the run leaves the run's random stream as it found it."""
    given = run_task("vision.gan", overrides=[*GAN_SETTINGS, f"classifier={gan_run / 'classifier'}"],
                     out=tmp_path / "run", runtime=runtime, progress="none")
    trained_inside = json.loads((gan_run / "metrics.json").read_text())
    assert not (given.run_dir / "classifier").exists()
    for key, value in given.metrics.items():
        if key.startswith(("train/", "val/", "test/", "gan/")):
            assert value == trained_inside[key], key


def test_predict_writes_the_image_of_each_seed(gan_run, runtime, tmp_path):
    task, rows = predict_run(gan_run, ["3", "4"], out=tmp_path / "a", runtime=runtime)
    assert rows == [{"input": 3, "file": str(tmp_path / "a" / "sample_seed3.png")},
                    {"input": 4, "file": str(tmp_path / "a" / "sample_seed4.png")}]
    assert task.format_prediction(rows[0]) == f"seed 3  ->  {tmp_path / 'a' / 'sample_seed3.png'}"
    first = read_png(rows[0]["file"])
    assert first.shape == (1, 8, 8)
    expected = generate(task.model, task.noise(1, 3))[0]
    assert torch.allclose(first, expected, atol=1 / 255 + 1e-6)
    assert not torch.allclose(first, read_png(rows[1]["file"]))
    # the same seed makes the same image, in a batch of its own or not; RUN/predictions by default
    _, (again,) = predict_run(gan_run, ["3"], runtime=runtime)
    assert again["file"] == str(gan_run / "predictions" / "sample_seed3.png")
    assert torch.equal(read_png(again["file"]), first)


@pytest.mark.parametrize("word", ["-1", "1.5", "true", "seven"])
def test_predict_refuses_what_is_not_a_seed(gan_run, runtime, tmp_path, word):
    with pytest.raises(UsageError, match=f"^input '{word}' is not a seed; expected an integer"):
        predict_run(gan_run, [word], out=tmp_path, runtime=runtime)
    assert not list(tmp_path.iterdir())


def test_predict_through_the_cli(gan_run, runtime, tmp_path, capsys):
    assert main(["predict", str(gan_run), "5", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"seed 5  ->  {tmp_path / 'sample_seed5.png'}"


def test_generate_writes_the_images_of_consecutive_seeds_and_a_grid(gan_run, runtime, tmp_path, capsys):
    assert main(["generate", str(gan_run), "--n", "5", "--out", str(tmp_path / "gen"), "--seed", "3"]) == 0
    assert "wrote 5 images and grid.png" in capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert files == ["grid.png", *(f"sample_seed{s}.png" for s in range(3, 8))]
    assert Image.open(tmp_path / "gen" / "sample_seed3.png").size == (8, 8)
    _, (row,) = predict_run(gan_run, ["3"], out=tmp_path / "predicted", runtime=runtime)
    assert torch.equal(read_png(tmp_path / "gen" / "sample_seed3.png"), read_png(row["file"]))
    assert Image.open(tmp_path / "gen" / "grid.png").size[1] >= 64


def test_generate_refuses_a_classifier_run_and_a_bad_count(gan_run, runtime, tmp_path, capsys):
    assert main(["generate", str(gan_run / "classifier"), "--out", str(tmp_path / "g")]) == 2
    assert "is a vision.classify run; generate needs a vision.gan run" in capsys.readouterr().err
    assert main(["generate", str(gan_run), "--n", "0", "--out", str(tmp_path / "g")]) == 2


def test_every_pass_goes_through_the_wrapped_model(gan_run, runtime, dlguide_smoke_run):
    result = dlguide_smoke_run("vision.gan", classifier=gan_run / "classifier", quality_samples=20)
    assert (result.run_dir / "samples" / "epoch_001.png").is_file()
    assert (result.run_dir / "samples.png").is_file()


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


def test_the_sampling_generator_exports_and_verifies(gan_run, runtime, tmp_path):
    manifest = check_export(gan_run, tmp_path / "bundle", runtime=runtime)
    assert manifest["export_module"] in ("model.generator", "model.generator_ema")
    assert manifest["inputs"][0]["name"] == "noise" and manifest["outputs"][0]["name"] == "image"
