"""nlp.classify end to end on review files the tests write: a short real training run, its
tokenizer and pictures, eval, prediction from a run whose training files are gone (library
and command line), every model family under a wrapper that catches calls around it, the
registry as the source of the model and dataset choices, the transformer paths, and the
one-line errors of bad settings and inputs."""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import shutil
import subprocess
import sys

import pytest

import dlguide_nlp.plugin
from dlguide import RawInput, UsageError, evaluate_run, hookimpl, load_run, predict, predict_run, run_task
from dlguide._cli import main
from dlguide._plugins import load_runtime, use_runtime
from dlguide._export import export_run
from dlguide.testing import GuardedStrategy, check_export
from dlguide_nlp import tokenization

GOOD = ["great", "wonderful", "moving", "brilliant", "funny", "superb"]
BAD = ["boring", "awful", "tedious", "clumsy", "dull", "bland"]
FILLER = ["the", "film", "plot", "actors", "story", "is", "was", "quite", "and", "its", "ending", "script"]
#: format_prediction: the text, the best class and its probability, the runner-up in parentheses
LINE = re.compile(r"^(?P<text>.+)  ->  (?P<label>good|bad) (?P<prob>\d\.\d\d)"
                  r"  \((?P<other>good|bad) (?P<other_prob>\d\.\d\d)\)$")
TINY = ["embedding_dim=8", "hidden_size=8", "heads=2", "max_length=12", "batch_size=16"]


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


LEARNS = ["dataset=files", "epochs=4", "embedding_dim=32", "hidden_size=32", "batch_size=32", "lr=1e-2",
          "dropout=0.1", "max_length=10", "seed=0"]


@pytest.fixture(scope="module")
def lstm_run(runtime, reviews_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lstm") / "run"
    return run_task("nlp.classify", overrides=[*LEARNS, f"data_dir={reviews_dir}"], out=out, runtime=runtime,
                    progress="none")


@pytest.fixture(scope="module")
def orphan_run(runtime, tmp_path_factory):
    """A GRU run whose training files were deleted once it finished: what it predicts with
    (tokenizer, classes, lengths) must all be in its run directory."""
    data = tmp_path_factory.mktemp("orphan-data")
    write_csv(data / "train.csv", reviews(400, 2))
    write_csv(data / "test.csv", reviews(100, 3))
    out = tmp_path_factory.mktemp("orphan") / "run"
    result = run_task("nlp.classify", overrides=[*LEARNS, "model=gru", f"data_dir={data}"], out=out,
                      runtime=runtime, progress="none")
    shutil.rmtree(data)
    return result


def test_plugin_hooks_are_valid(dlguide_check_hooks):
    assert dlguide_check_hooks(dlguide_nlp.plugin) == ["dlguide_register"]


def test_plugin_module_imports_no_torch():
    code = "import sys, dlguide_nlp.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_registered_target_imports_and_is_a_choice_of_the_task(runtime):
    names = {e.name for e in runtime.registry.entries() if e.owner == "nlp"}
    assert names == {"nlp.classify", "nlp.rnn", "nlp.lstm", "nlp.gru", "nlp.transformer", "nlp.rotten-tomatoes",
                     "nlp.files", "nlp.huggingface"}
    for entry in runtime.registry.entries():
        assert callable(entry.load()), entry.name
    assert runtime.registry.choices("model", "nlp.classify") == ["gru", "lstm", "rnn", "transformer"]
    assert runtime.registry.choices("dataset", "nlp.classify") == ["files", "huggingface", "rotten-tomatoes"]


class AnotherPackage:
    """A third-party plugin that adds a network to nlp.classify (here the GRU builder, renamed)."""

    @staticmethod
    @hookimpl
    def dlguide_register(registry):
        registry.add_model("nlp.my-gru", "dlguide_nlp.models:build_gru", "a GRU by another name",
                           tasks="nlp.classify")


def test_a_network_another_package_registers_is_a_model_choice(reviews_dir, tmp_path):
    runtime = load_runtime(strict=True, disable=(), extra={"nlp": dlguide_nlp.plugin, "other": AnotherPackage},
                           use_entry_points=False)
    sets = ["dataset=files", f"data_dir={reviews_dir}", "model=my-gru", "fast_dev_run=true", *TINY]
    run_task("nlp.classify", overrides=sets, out=tmp_path / "run", runtime=runtime, progress="none")
    assert json.loads((tmp_path / "run" / "task.json").read_text())["classes"] == ["bad", "good"]


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru", "transformer"])
def test_every_model_family_calls_its_network_through_the_wrapped_model(runtime, reviews_dir, tmp_path, model):
    sets = ["dataset=files", f"data_dir={reviews_dir}", f"model={model}", "fast_dev_run=true", *TINY]
    run_task("nlp.classify", overrides=sets, out=tmp_path / "run", runtime=runtime, progress="none",
             strategy=GuardedStrategy(device="cpu"))
    assert (tmp_path / "run" / "model.safetensors").is_file()
    # and each exports: ONNX and torch.export trace the network on unpacked, full-width rows
    manifest = check_export(tmp_path / "run", tmp_path / "bundle", runtime=runtime)
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert "tokenizer.json" in manifest["files"]


def test_a_bidirectional_packed_network_exports_its_weights_and_says_why_not_the_rest(runtime, reviews_dir,
                                                                                     tmp_path):
    sets = ["dataset=files", f"data_dir={reviews_dir}", "bidirectional=true", "fast_dev_run=true", *TINY]
    run_task("nlp.classify", overrides=sets, out=tmp_path / "run", runtime=runtime, progress="none")
    result = export_run(tmp_path / "run", tmp_path / "bundle", runtime=runtime)
    assert list(result.manifest["formats"]) == ["safetensors"]
    assert [n.split(":")[0] for n in result.notes] == ["onnx", "pt2"]
    assert all("bidirectional packed recurrent network has no exported form" in n for n in result.notes)


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


def test_predict_from_a_run_whose_training_files_were_deleted(orphan_run, runtime, caplog):
    texts = ["a wonderful and moving story", "the script was tedious", "zebra " * 30]
    with caplog.at_level(logging.WARNING, logger="dlguide_nlp"):
        task, rows = predict_run(orphan_run.run_dir, texts, runtime=runtime)
    assert [row["label"] for row in rows[:2]] == ["good", "bad"]
    for row, text in zip(rows, texts):
        assert list(row) == ["input", "label", "probability", "top"]
        assert row["input"] == text and row["top"][0] == {"label": row["label"], "probability": row["probability"]}
        assert {c["label"] for c in row["top"]} == {"good", "bad"}
        assert sum(c["probability"] for c in row["top"]) == pytest.approx(1, abs=1e-3) and row["probability"] >= 0.5
        assert json.loads(json.dumps(row)) == row
    line = LINE.match(task.format_prediction(rows[0]))
    assert line["label"] == "good" and line["other"] == "bad" and line["text"] == texts[0]
    assert "cut input 'zebra zebra" in caplog.text and "to max_length=10 tokens" in caplog.text


def test_cli_predict_reads_a_file_with_a_run_whose_training_files_were_deleted(orphan_run, runtime, tmp_path,
                                                                              capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("a superb ending\n\nthe actors were clumsy\n", encoding="utf-8")
    with use_runtime(runtime):
        code = main(["predict", str(orphan_run.run_dir), "brilliant", "--file", str(texts)])
    out = capsys.readouterr().out
    assert code == 0
    lines = [LINE.match(line) for line in out.splitlines()]
    assert [(m["label"], m["text"]) for m in lines] == [("good", "brilliant"), ("good", "a superb ending"),
                                                        ("bad", "the actors were clumsy")]
    with use_runtime(runtime):
        assert main(["predict", str(orphan_run.run_dir), "dull", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["label"] == "bad" and row["input"] == "dull"


@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_an_empty_text_is_a_one_line_usage_error(orphan_run, runtime, text):
    with pytest.raises(UsageError, match="is empty or only whitespace; expected a text to classify") as info:
        predict_run(orphan_run.run_dir, ["fine", text], runtime=runtime)
    assert "\n" not in str(info.value)


def test_a_huge_text_is_cut_before_the_tokenizer_reads_it(orphan_run, runtime, monkeypatch):
    seen = []

    def spy(tokenizer, texts):
        seen.extend(len(t) for t in texts)
        return encode(tokenizer, texts)

    encode = tokenization.encode
    monkeypatch.setattr(tokenization, "encode", spy)
    huge = "an awful, tedious film " * 50_000
    _, [row] = predict_run(orphan_run.run_dir, [RawInput(value=huge, name="book.txt")], runtime=runtime)
    assert seen == [10 * 32]  # max_length=10 tokens, 32 characters each at most
    assert row["label"] == "bad" and len(row["input"]) == 200 and row["input"].endswith("...")


def test_the_tokenizer_is_read_once_per_loaded_run(orphan_run, runtime, monkeypatch):
    task = load_run(orphan_run.run_dir, runtime=runtime)
    reads = []
    load = tokenization.load_tokenizer
    monkeypatch.setattr(tokenization, "load_tokenizer", lambda run_dir: reads.append(run_dir) or load(run_dir))
    for text in ("great", "dull"):
        predict(task, [RawInput(value=text)])
    assert reads == [orphan_run.run_dir]


def test_transformer_from_scratch_trains_evaluates_and_predicts(runtime, reviews_dir, tmp_path):
    sets = ["dataset=files", f"data_dir={reviews_dir}", "model=transformer", "tokenizer=wordpiece",
            "hidden_size=16", "heads=2", "max_length=16", "epochs=1", "limit_train_batches=2"]
    result = run_task("nlp.classify", overrides=sets, out=tmp_path / "run", runtime=runtime, progress="none")
    assert (result.run_dir / "transformer" / "config.json").is_file()
    assert evaluate_run(result.run_dir, runtime=runtime)["test/accuracy"] == pytest.approx(
        result.metrics["test/accuracy"])
    task, [row] = predict_run(result.run_dir, ["great film"], runtime=runtime)
    assert LINE.match(task.format_prediction(row))


@pytest.mark.slow
def test_packaged_minilm_fine_tunes_and_predicts(runtime, reviews_dir, tmp_path):
    sets = ["dataset=files", f"data_dir={reviews_dir}", "model=transformer", "pretrained=minilm",
            "max_length=16", "fast_dev_run=true", "batch_size=8"]
    result = run_task("nlp.classify", overrides=sets, out=tmp_path / "run", runtime=runtime, progress="none")
    config = json.loads((result.run_dir / "transformer" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["id2label"] == {"0": "bad", "1": "good"}
    tokenizer = json.loads((result.run_dir / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == 30522  # MiniLM's own vocabulary, not one trained here
    task, [row] = predict_run(result.run_dir, ["great film"], runtime=runtime)
    assert LINE.match(task.format_prediction(row))
    check_export(result.run_dir, tmp_path / "bundle", runtime=runtime)


@pytest.mark.parametrize(("sets", "message"), [
    (["dataset=files"], "set data_dir"),
    (["pretrained=minilm"], "pretrained='minilm' needs model=transformer"),
    (["model=transformer", "pretrained=/nowhere"], "pretrained='/nowhere' is not a from_pretrained folder"),
    (["val_fraction=0.5", "test_fraction=0.5"], "leave no training data"),
    (["max_length=1"], "'max_length': 1; expected an integer >= 2"),
    (["tokenizer=sentencepiece"], "tokenizer"),
    (["model=lstn"], "'model': 'lstn'; registered models: gru, lstm, rnn, transformer; did you mean 'lstm'?"),
    (["dataset=imdb"], "registered datasets: files, huggingface, rotten-tomatoes"),
    (["data_dir=."], "dataset 'rotten-tomatoes' reads no data_dir"),
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
