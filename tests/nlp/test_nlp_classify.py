"""nlp.classify end to end on review files the tests write: a short real training run, its
tokenizer and pictures, eval and predict (library and command line), the transformer paths,
and the one-line errors of bad settings."""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import subprocess
import sys

import pytest

import dlguide_nlp.plugin
from dlguide._errors import UsageError
from dlguide._plugins import load_runtime
from dlguide._runs import evaluate_run, predict_run, run_task

GOOD = ["great", "wonderful", "moving", "brilliant", "funny", "superb"]
BAD = ["boring", "awful", "tedious", "clumsy", "dull", "bland"]
FILLER = ["the", "film", "plot", "actors", "story", "is", "was", "quite", "and", "its", "ending", "script"]
LINE = re.compile(r"^(?P<label>good|bad)\t(?P<prob>\d\.\d{4})\t(?P<text>.+)$")


def reviews(n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "good" if i % 2 else "bad"
        words = rng.choices(FILLER, k=rng.randint(3, 12)) + [rng.choice(GOOD if label == "good" else BAD)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def runtime():
    return load_runtime(strict=True, disable=(), extra={"nlp": dlguide_nlp.plugin}, use_entry_points=False)


@pytest.fixture(scope="module")
def reviews_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reviews")
    write_csv(folder / "train.csv", reviews(400, 0) + [{"text": "", "label": "good"}])
    write_csv(folder / "test.csv", reviews(100, 1))
    return folder


@pytest.fixture(scope="module")
def lstm_run(runtime, reviews_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lstm") / "run"
    sets = ["dataset=files", f"data_dir={reviews_dir}", "epochs=4", "embedding_dim=32", "hidden_size=32",
            "batch_size=32", "lr=1e-2", "dropout=0.1", "max_length=10", "seed=0"]
    return run_task("nlp.classify", overrides=sets, out=out, runtime=runtime, progress="none")


def test_plugin_hooks_are_valid(dlguide_check_hooks):
    assert dlguide_check_hooks(dlguide_nlp.plugin) == ["dlguide_register"]


def test_plugin_module_imports_no_torch():
    code = "import sys, dlguide_nlp.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_registered_target_imports(runtime):
    names = {e.name for e in runtime.registry.entries() if e.owner == "nlp"}
    assert {"nlp.classify", "nlp.recurrent", "nlp.transformer", "nlp.small-transformer", "nlp.rotten-tomatoes",
            "nlp.files", "nlp.huggingface"} <= names
    for entry in runtime.registry.entries():
        assert callable(entry.load()), entry.name


def test_short_run_learns_and_writes_its_tokenizer_and_pictures(lstm_run):
    metrics, run_dir = lstm_run.metrics, lstm_run.run_dir
    assert metrics["test/accuracy"] > 0.9  # chance is 0.5
    assert 0.9 < metrics["test/f1_macro"] <= 1
    assert {"test/precision/bad", "test/precision/good", "test/recall/bad", "test/recall/good"} <= metrics.keys()
    for name in ("tokenizer.json", "confusion_matrix.png", "learning_curves.png", "model.safetensors"):
        assert (run_dir / name).is_file(), name
    meta = json.loads((run_dir / "task.json").read_text())
    assert meta["classes"] == ["bad", "good"] and meta["dropped_empty"] == {"train": 1, "test": 0}
    assert meta["sizes"] == {"train": 360, "val": 40, "test": 100}
    assert meta["truncated"]["train"] > 0  # texts of up to 13 words against max_length=10
    vocab = json.loads((run_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert meta["vocab_size"] == len(vocab) and {"great", "boring", "[PAD]"} <= vocab.keys()


def test_evaluate_run_reuses_the_saved_tokenizer(lstm_run, runtime):
    before = (lstm_run.run_dir / "tokenizer.json").read_bytes()
    metrics = evaluate_run(lstm_run.run_dir, runtime=runtime)
    assert metrics["test/accuracy"] == pytest.approx(lstm_run.metrics["test/accuracy"])
    assert (lstm_run.run_dir / "tokenizer.json").read_bytes() == before


def test_predict_prints_label_and_probability(lstm_run, runtime, caplog):
    texts = ["a wonderful and moving story", "the script was tedious", "zebra " * 30]
    with caplog.at_level(logging.WARNING, logger="dlguide_nlp"):
        lines = predict_run(lstm_run.run_dir, texts, runtime=runtime)
    rows = [LINE.match(line) for line in lines]
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows[:2]] == ["good", "bad"]
    assert all(0.5 <= float(r["prob"]) <= 1 for r in rows)
    assert "cut 1 of 3 texts to max_length=10 tokens" in caplog.text


def test_cli_predict_reads_a_file(lstm_run, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a superb ending\n\nthe actors were clumsy\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "dlguide", "predict", str(lstm_run.run_dir), "brilliant",
                          "--file", str(texts)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    labels = [LINE.match(line)["label"] for line in out.stdout.splitlines()]
    assert labels == ["good", "good", "bad"]


def test_transformer_from_scratch_trains_evaluates_and_predicts(runtime, reviews_dir, tmp_path):
    sets = ["dataset=files", f"data_dir={reviews_dir}", "model=transformer", "tokenizer=wordpiece",
            "hidden_size=16", "heads=2", "max_length=16", "epochs=1", "limit_train_batches=2"]
    result = run_task("nlp.classify", overrides=sets, out=tmp_path / "run", runtime=runtime, progress="none")
    assert (result.run_dir / "transformer" / "config.json").is_file()
    assert evaluate_run(result.run_dir, runtime=runtime)["test/accuracy"] == pytest.approx(
        result.metrics["test/accuracy"])
    [line] = predict_run(result.run_dir, ["great film"], runtime=runtime)
    assert LINE.match(line)


@pytest.mark.slow
def test_packaged_minilm_fine_tunes_and_predicts(runtime, reviews_dir, tmp_path):
    sets = ["dataset=files", f"data_dir={reviews_dir}", "model=transformer", "pretrained=minilm",
            "max_length=16", "fast_dev_run=true", "batch_size=8"]
    result = run_task("nlp.classify", overrides=sets, out=tmp_path / "run", runtime=runtime, progress="none")
    config = json.loads((result.run_dir / "transformer" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["id2label"] == {"0": "bad", "1": "good"}
    tokenizer = json.loads((result.run_dir / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == 30522  # MiniLM's own vocabulary, not one trained here
    [line] = predict_run(result.run_dir, ["great film"], runtime=runtime)
    assert LINE.match(line)


@pytest.mark.parametrize(("sets", "message"), [
    (["dataset=files"], "set data_dir"),
    (["pretrained=minilm"], "pretrained='minilm' needs model=transformer"),
    (["model=transformer", "pretrained=/nowhere"], "pretrained='/nowhere' is not a from_pretrained folder"),
    (["val_fraction=0.5", "test_fraction=0.5"], "leave no training data"),
    (["max_length=1"], "'max_length': 1; expected an integer >= 2"),
    (["tokenizer=sentencepiece"], "tokenizer"),
])
def test_bad_settings_are_one_line_usage_errors(runtime, tmp_path, sets, message):
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        run_task("nlp.classify", overrides=sets, out=tmp_path / "run", runtime=runtime, progress="none")
    assert "\n" not in str(info.value)


def test_bad_files_fail_through_the_command_line(tmp_path):
    write_csv(tmp_path / "train.csv", [{"review": "fine", "label": "good"}])
    out = subprocess.run([sys.executable, "-m", "dlguide", "run", "nlp.classify", "--out", str(tmp_path / "run"),
                          "--set", "dataset=files", f"data_dir={tmp_path}"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        "train.csv has no column 'text'; columns found: 'review', 'label' (set text_column / label_column)")
