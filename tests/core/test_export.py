"""dlguide export: bundles, their manifest and checksums, verify, loading with each runtime."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dlguide import UsageError, load_run, predict, run_task
from dlguide._export import export_run, load_model, read_reference_inputs, verify_bundle
from dlguide._inference import RawInput
from dlguide._monitor import DriftMonitor, psi
from dlguide.testing import check_export, run_cli

SETS = ["epochs=2", "samples=256", "hidden=8", "seed=0"]


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "sine"
    run_task("example.sine", overrides=SETS, out=out, progress="none")
    return out


@pytest.fixture(scope="module")
def bundle(sine_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "sine-bundle"
    check_export(sine_run, out)
    return out


def copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_a_bundle_holds_what_serving_needs(bundle, sine_run):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "example.sine"
    assert manifest["plugin"]["distribution"] == "dlguide-example"
    assert {"dlguide-core", "torch", "onnxruntime"} <= set(manifest["versions"])
    assert manifest["formats"] == {"safetensors": "model.safetensors", "onnx": "model.onnx", "pt2": "model.pt2"}
    assert manifest["inputs"] == [{"name": "input_0", "shape": ["batch", 1], "dtype": "float32"}]
    assert set(manifest["files"]) >= {"config.yaml", "model.safetensors", "model.onnx", "model.pt2",
                                      "reference.safetensors"}
    test_metrics = json.loads((sine_run / "metrics.json").read_text())
    assert manifest["metrics"]["test/mae"] == test_metrics["test/mae"]
    # reference inputs with the results the run gave them, and statistics of 32 test predictions
    assert len(manifest["reference"]["inputs"]) == 4
    assert manifest["reference"]["results"][0]["input"] == manifest["reference"]["inputs"][0]["value"]
    assert manifest["reference"]["statistics_inputs"] == 32
    assert manifest["statistics"]["prediction"]["kind"] == "numeric"
    assert sum(manifest["statistics"]["input"]["fractions"].values()) == pytest.approx(1)
    # no checkpoints, logs or pictures: only what loading and predicting read
    assert not any(name.endswith((".ckpt", ".jsonl", ".png")) for name in manifest["files"])


def test_every_runtime_predicts_like_the_run(bundle, sine_run):
    xs = [RawInput(value=x) for x in (-2.0, 0.0, 0.5, 3.0)]
    want = predict(load_run(sine_run), xs)
    for runtime in ("torch", "onnx"):
        got = predict(load_model(bundle, runtime=runtime).task, xs)
        assert [r["y"] for r in got] == pytest.approx([r["y"] for r in want], abs=2e-4)


def test_verify_reports_each_format(bundle):
    res = run_cli("export", "verify", bundle)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["torch", "onnx", "onnx", "pt2", "pt2"]
    assert all(line.endswith("ok") for line in lines)


def test_a_changed_file_is_refused_in_one_line(bundle, tmp_path):
    changed = copy(bundle, tmp_path)
    weights = changed / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    res = run_cli("export", "verify", changed)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"dlguide: error: bundle {changed}: model.safetensors does not match its sha256 in manifest.json "
        "(changed or damaged); export the run again"]
    with pytest.raises(UsageError, match="does not match its sha256"):
        load_model(changed)


def test_an_added_or_missing_file_is_refused(bundle, tmp_path):
    added = copy(bundle, tmp_path)
    (added / "tokenizer.json").write_text("{}")
    with pytest.raises(UsageError, match="tokenizer.json is not listed in manifest.json"):
        load_model(added)
    (added / "tokenizer.json").unlink()
    (added / "model.onnx").unlink()
    with pytest.raises(UsageError, match="model.onnx is missing"):
        load_model(added)


def test_a_bundle_is_not_a_run_directory(bundle):
    res = run_cli("resume", bundle)
    assert res.returncode == 2
    assert "is an export bundle, not a run directory" in res.stderr


def test_export_refuses_bad_requests(sine_run, bundle, tmp_path):
    res = run_cli("export", sine_run, "--out", bundle)
    assert res.returncode == 2 and "already exists and is not empty" in res.stderr
    res = run_cli("export", sine_run, "--out", tmp_path / "b", "--format", "onnx,tflite")
    assert res.returncode == 2 and "unknown export format 'tflite'" in res.stderr
    res = run_cli("export", sine_run)
    assert res.returncode == 2 and "usage: dlguide export RUN_DIR --out BUNDLE" in res.stderr
    assert not (tmp_path / "b").exists()
    # a run without weights: one line saying how to finish it
    (tmp_path / "unfinished").mkdir()
    shutil.copy(sine_run / "config.yaml", tmp_path / "unfinished" / "config.yaml")
    res = run_cli("export", tmp_path / "unfinished", "--out", tmp_path / "c")
    assert res.returncode == 2 and "has no trained weights yet" in res.stderr
    with pytest.raises(UsageError, match="is a run directory; the onnx runtime serves an export bundle"):
        load_model(sine_run, runtime="onnx")


def test_formats_can_be_chosen(sine_run, tmp_path):
    res = run_cli("export", sine_run, "--out", tmp_path / "b", "--format", "safetensors")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["formats"] == {"safetensors": "model.safetensors"}
    assert not (tmp_path / "b" / "model.onnx").exists()
    with pytest.raises(UsageError, match="has no model.onnx"):
        load_model(tmp_path / "b", runtime="onnx")
    assert [c.runtime for c in verify_bundle(tmp_path / "b")] == ["torch (against export time)"]


def test_a_pickled_program_is_refused(bundle, tmp_path):
    """torch.export.load unpickles sample inputs it cannot read as plain tensors: such an archive
    is refused before torch sees it."""
    import zipfile

    from dlguide._export import check_program

    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(bundle / "model.pt2") as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item.endswith("sample_inputs/model.pt"):
                import io
                buffer = io.BytesIO()
                torch.save({"x": shutil.copy}, buffer)  # a callable: weights_only refuses it
                data = buffer.getvalue()
            dst.writestr(item, data)
    with pytest.raises(UsageError, match="sample inputs that are not plain tensors"):
        check_program(evil)


def test_reference_statistics_move_with_shifted_inputs(bundle):
    """The drift monitor bins live samples as the reference was binned: test-like inputs keep the
    PSI small, inputs far outside the training range push it past the threshold."""
    loaded = load_model(bundle)
    monitor = DriftMonitor.for_model(loaded)
    manifest = loaded.manifest
    reference = read_reference_inputs(bundle, manifest)
    assert len(reference) == 4

    def summary(values):
        inputs, predictions = {}, {}
        from dlguide._inference import decode_inputs, predict_samples
        samples = decode_inputs(loaded.task, [RawInput(value=v) for v in values])
        for sample, output in zip(samples, predict_samples(loaded.task, samples)):
            i, p = monitor.bins(sample, output)
            inputs[i] = inputs.get(i, 0) + 1
            predictions[p] = predictions.get(p, 0) + 1
        return monitor.summary(inputs, predictions)

    even = summary([-3.0 + 6.0 * i / 63 for i in range(64)])
    shifted = summary([2.5 + 0.01 * i for i in range(64)])
    assert even["input"]["psi"] < 0.2 and even["drift"] is False
    assert shifted["input"]["psi"] > 1.0 and shifted["drift"] is True
    assert DriftMonitor.gauges(shifted)["input"] == shifted["input"]["psi"]
    assert psi({"a": 1, "b": 1}, {"a": 1, "b": 1}) == 0
