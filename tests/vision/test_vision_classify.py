"""vision.classify end to end: registration, a short real training run on digits, its
pictures, predict on odd image files (paths and bytes, after the training data are gone),
and the one-line errors of bad settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dlguide_vision.plugin
from dlguide import RawInput, UsageError, evaluate_run, load_run, predict, predict_run, run_task
from dlguide._cli import main
from dlguide.testing import check_export

#: format_prediction of every classifier: the input, the best class and its probability, the runners-up
LINE = re.compile(r"^(?P<path>.+)  ->  (?P<label>\S+) \d\.\d\d  \((?P<others>\S+ \d\.\d\d, \S+ \d\.\d\d)\)$")


@pytest.fixture(scope="module")
def digits_run(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "run"
    return run_task("vision.classify", overrides=["epochs=3", "seed=0"], out=out, runtime=runtime, progress="none")


def test_plugin_hooks_are_valid(dlguide_check_hooks):
    assert sorted(dlguide_check_hooks(dlguide_vision.plugin)) == ["dlguide_add_commands", "dlguide_register"]


def test_plugin_module_imports_no_torch():
    code = "import sys, dlguide_vision.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_registered_target_imports(runtime):
    names = {e.name for e in runtime.registry.entries() if e.owner == "vision"}
    assert {"vision.classify", "vision.cnn", "vision.lenet5", "vision.resnet18", "vision.digits",
            "vision.mnist", "vision.fashion-mnist", "vision.kmnist", "vision.cifar10", "vision.imagefolder"} <= names
    for entry in runtime.registry.entries():
        assert callable(entry.load()), entry.name


def test_models_and_datasets_are_the_registered_choices(runtime):
    registry = runtime.registry
    assert registry.choices("model", "vision.classify") == ["cnn", "lenet5", "resnet18"]
    assert registry.choices("model", "vision.gan") == ["dcgan"]
    datasets = ["cifar10", "digits", "fashion-mnist", "imagefolder", "kmnist", "mnist"]
    assert registry.choices("dataset", "vision.classify") == registry.choices("dataset", "vision.gan") == datasets


def test_short_digits_run_learns_and_draws(digits_run):
    metrics, run_dir = digits_run.metrics, digits_run.run_dir
    assert metrics["test/accuracy"] > 0.8  # chance is 0.1
    assert 0 < metrics["test/f1_macro"] <= 1
    assert {f"test/precision/{i}" for i in range(10)} | {f"test/recall/{i}" for i in range(10)} <= metrics.keys()
    for name in ("confusion_matrix.png", "misclassified.png", "learning_curves.png", "model.safetensors"):
        assert (run_dir / name).is_file(), name
    meta = json.loads((run_dir / "task.json").read_text())
    assert meta["channels"] == 1 and meta["image_size"] == 8 and meta["classes"] == [str(i) for i in range(10)]
    assert 0.2 < meta["mean"][0] < 0.4 and sum(meta["sizes"].values()) == 1797


def test_evaluate_run_reproduces_the_test_accuracy(digits_run, runtime):
    metrics = evaluate_run(digits_run.run_dir, runtime=runtime)
    assert metrics["test/accuracy"] == pytest.approx(digits_run.metrics["test/accuracy"])


def test_predict_converts_odd_images(digits_run, runtime, tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8), "L").save(gray)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (50, 70), (255, 0, 0, 128)).save(rgba)
    jpeg = tmp_path / "large.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(jpeg)
    task, rows = predict_run(digits_run.run_dir, [str(gray), str(rgba), str(jpeg)], runtime=runtime)
    lines = [task.format_prediction(row) for row in rows]
    assert [LINE.match(line)["path"] for line in lines] == [str(gray), str(rgba), str(jpeg)]
    for row in rows:
        assert list(row) == ["input", "label", "probability", "top"]
        probs = [c["probability"] for c in row["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
        assert row["top"][0] == {"label": row["label"], "probability": row["probability"]}
    assert json.loads(json.dumps(rows)) == rows  # JSON-safe as they are


def test_predict_matches_the_training_conversion(digits_run, runtime, tmp_path):
    from dlguide_vision.datasets import digits

    images, labels = digits().splits["train"]
    paths = []
    for i in range(20):
        path = tmp_path / f"{i}.png"
        Image.fromarray((images[i, 0].numpy() * 255).round().astype(np.uint8), "L").save(path)
        paths.append(str(path))
    task, rows = predict_run(digits_run.run_dir, paths, runtime=runtime)
    with torch.no_grad():
        direct = task.model(task.normalize(images[:20])).softmax(1)
    assert [row["label"] for row in rows] == [str(int(c)) for c in direct.argmax(1)]
    assert [row["probability"] for row in rows] == pytest.approx(direct.max(1).values.tolist(), abs=0.02)


def test_predict_reads_image_bytes(digits_run, runtime, tmp_path):
    path = tmp_path / "seven.png"
    Image.new("L", (8, 8), 200).save(path)
    task = load_run(digits_run.run_dir, runtime=runtime)
    (from_bytes,) = predict(task, [RawInput(value=path.read_bytes(), name="upload.png")])
    _, (from_path,) = predict_run(digits_run.run_dir, [str(path)], runtime=runtime)
    assert from_bytes == {**from_path, "input": "upload.png"}
    assert task.format_prediction(from_bytes).startswith("upload.png  ->  ")


def test_predict_unreadable_file_is_named(digits_run, runtime, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(UsageError, match=f"^cannot read image {re.escape(str(bad))}: ") as info:
        predict_run(digits_run.run_dir, [str(bad)], runtime=runtime)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="input file not found: .*missing.png"):
        predict_run(digits_run.run_dir, [str(tmp_path / "missing.png")], runtime=runtime)


@pytest.mark.parametrize("overrides", [
    {"model": "lenet5", "activation": "tanh"},
    {"model": "resnet18", "batch_size": 16},
    {"augment": "true", "hflip": "true", "label_smoothing": 0.1, "image_channels": 3, "image_size": 12},
    {"channels": "8,16,32", "activation": "sigmoid", "scheduler": "cosine"},
], ids=["lenet5", "resnet18", "augment", "deep-sigmoid"])
def test_smoke_runs(dlguide_runtime, dlguide_smoke_run, overrides):
    dlguide_runtime(dlguide_vision.plugin)
    result = dlguide_smoke_run("vision.classify", **overrides)
    assert (result.run_dir / "confusion_matrix.png").is_file()


def write_folder(root, per_class=6):
    rng = np.random.default_rng(0)
    for name, channel in (("red", 0), ("green", 1), ("blue", 2)):
        for i in range(per_class):
            pixels = rng.integers(0, 60, (20 + i, 24, 3), dtype=np.uint8)
            pixels[..., channel] = 200
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}")


@pytest.mark.slow
def test_imagefolder_trains_then_predicts_without_its_data(runtime, tmp_path, capsys):
    write_folder(tmp_path / "images")
    result = run_task("vision.classify", runtime=runtime, progress="none", out=tmp_path / "run",
                      overrides=[f"data_dir={tmp_path / 'images'}", "dataset=imagefolder", "image_size=16",
                                 "epochs=8", "batch_size=4", "val_fraction=0.2", "test_fraction=0.2"])
    assert result.metrics["test/accuracy"] == 1.0
    shutil.rmtree(tmp_path / "images")  # predicting needs task.json and the weights only
    probes = {}
    for name, color in (("red", (220, 10, 10)), ("green", (10, 220, 10)), ("blue", (10, 10, 220))):
        probes[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (300, 100), color).save(probes[name])
    task, rows = predict_run(result.run_dir, [str(p) for p in probes.values()], runtime=runtime)
    assert [row["label"] for row in rows] == list(probes)
    assert [row["input"] for row in rows] == [str(p) for p in probes.values()]

    assert main(["predict", str(result.run_dir), str(probes["green"])]) == 0
    assert capsys.readouterr().out.startswith(f"{probes['green']}  ->  green ")
    assert main(["predict", str(result.run_dir), "--json", str(probes["blue"])]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["input"] == str(probes["blue"]) and row["label"] == "blue"


def test_weights_file_starts_a_run(runtime, digits_run, tmp_path):
    result = run_task("vision.classify", runtime=runtime, progress="none", out=tmp_path / "run",
                      overrides=[f"weights={digits_run.run_dir / 'model.safetensors'}", "epochs=1", "lr=1e-4",
                                 "scheduler=none", "seed=0", "limit_train_batches=5"])
    assert result.metrics["test/accuracy"] > 0.8  # five slow steps from scratch would not get there


@pytest.mark.parametrize("sets, message", [
    (["val_fraction=0.5", "test_fraction=0.5"], "leave no training data"),
    (["val_fraction=0"], "no validation split"),
    (["dataset=cifar"], "'dataset': 'cifar'; registered datasets: cifar10, digits, .*did you mean 'cifar10'"),
    (["dataset=imagefolder"], "needs data_dir"),
    (["image_channels=2"], "expected one of 0, 1, 3"),
    (["weights=/no/such/file.safetensors"], "weights file not found"),
    (["channels=8,8,8,8"], "at most 3 entries"),
])
def test_bad_settings_are_one_line_usage_errors(runtime, tmp_path, sets, message):
    with pytest.raises(UsageError, match=message):
        run_task("vision.classify", overrides=[*sets, "fast_dev_run=true"], out=tmp_path / "run",
                 runtime=runtime, progress="none")


def test_cli_reports_missing_files_in_one_line_with_exit_2(tmp_path, capsys, dlguide_runtime):
    dlguide_runtime(dlguide_vision.plugin)
    code = main(["run", "vision.classify", "--out", str(tmp_path / "run"), "--quiet",
                 "--set", "dataset=kmnist", f"data_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert str(tmp_path / "KMNIST" / "raw") in err and "train-images-idx3-ubyte" in err


def test_a_default_onecycle_run_is_extended_by_resume(runtime, tmp_path):
    """The defaults (onecycle) over 3 epochs, then ``resume --set epochs=5``: torch's OneCycleLR
    refused its 124th step here; the schedule is now re-planned over the longer run."""
    from dlguide import resume_run

    out = tmp_path / "run"
    sets = ["epochs=3", "limit_train_batches=4", "limit_eval_batches=2"]
    run_task("vision.classify", overrides=sets, out=out, runtime=runtime, progress="none")
    resume_run(out, overrides=["epochs=5"], runtime=runtime, progress="none")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    # the 3-epoch plan ended at its floor; the 5-epoch plan is still annealing after step 12 of 20
    assert rows[3]["lr"] > rows[2]["lr"] and rows[3]["lr"] > rows[4]["lr"] > 0
    assert (out / "metrics.json").is_file() and (out / "model.safetensors").is_file()


def test_the_run_exports_and_every_format_verifies(digits_run, runtime, tmp_path):
    manifest = check_export(digits_run.run_dir, tmp_path / "bundle", runtime=runtime)
    assert manifest["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert manifest["statistics"]["prediction"]["kind"] == "class"


def test_the_test_pass_records_each_image_for_compare(digits_run):
    from dlguide._outcomes import read_outcomes

    meta, columns = read_outcomes(digits_run.run_dir)
    assert set(columns) == {"correct", "loss", "sample_digest"}
    assert int(meta["samples"]) == len(columns["correct"]) == len(columns["loss"])
    assert float(columns["correct"].mean()) == pytest.approx(digits_run.metrics["test/accuracy"], abs=1e-6)
    assert float(columns["loss"].mean()) == pytest.approx(digits_run.metrics["test/loss"], rel=1e-4)
