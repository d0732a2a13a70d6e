"""nlp.classify predict with hostile input: megabyte texts are cut before the tokenizer reads
them and echoed as a short prefix, on every path (library, command line, --file, --json,
bytes, batches, the transformer's tokenizer)."""

from __future__ import annotations

import csv
import json
import random

import pytest

import dlguide_nlp.plugin
from dlguide import RawInput, UsageError, load_run, predict, predict_run, run_task
from dlguide._cli import main
from dlguide._plugins import load_runtime, use_runtime
from dlguide_nlp import tokenization
from dlguide_nlp.classify import CHARS_PER_TOKEN, ECHO_CHARS

WORDS = ["great", "awful", "the", "film", "plot", "was", "quite", "dull", "moving"]
TINY = ["embedding_dim=8", "hidden_size=8", "heads=2", "max_length=12", "batch_size=16", "fast_dev_run=true"]
#: a five-megabyte text: one line, words and spaces
HUGE = ("an awful, tedious film " * 230_000)[:5_000_000]


@pytest.fixture(scope="module")
def runtime():
    return load_runtime(strict=True, disable=(), extra={"nlp": dlguide_nlp.plugin}, use_entry_points=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    rng = random.Random(0)
    for name, n in (("train", 64), ("test", 16)):
        with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            for i in range(n):
                writer.writerow({"text": " ".join(rng.choices(WORDS, k=6)), "label": "good" if i % 2 else "bad"})
    return folder


@pytest.fixture(scope="module", params=["gru", "transformer"])
def tiny_run(request, runtime, data_dir, tmp_path_factory):
    sets = [*TINY, "dataset=files", f"data_dir={data_dir}", f"model={request.param}"]
    if request.param == "transformer":
        sets.append("tokenizer=wordpiece")
    out = tmp_path_factory.mktemp(request.param) / "run"
    return run_task("nlp.classify", overrides=sets, out=out, runtime=runtime, progress="none")


@pytest.fixture
def tokenized(monkeypatch):
    """The lengths of the texts the tokenizer reads."""
    seen: list[int] = []
    encode = tokenization.encode

    def spy(tokenizer, texts, *args, **kwargs):
        seen.extend(len(t) for t in texts)
        return encode(tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(tokenization, "encode", spy)
    return seen


def assert_short_echo(text: str) -> None:
    assert len(text) <= ECHO_CHARS and text.endswith("...")
    assert text.startswith("an awful, tedious film")


@pytest.mark.parametrize("value", [HUGE, HUGE.encode("utf-8")], ids=["text", "bytes"])
def test_a_huge_input_is_cut_before_the_tokenizer_and_echoed_short(tiny_run, runtime, tokenized, value):
    _, [row] = predict_run(tiny_run.run_dir, [RawInput(value=value, name="book.txt")], runtime=runtime)
    assert tokenized and max(tokenized) <= 12 * CHARS_PER_TOKEN
    assert_short_echo(row["input"])
    assert json.loads(json.dumps(row)) == row


def test_a_batch_of_huge_inputs_is_cut_and_echoed_short(tiny_run, runtime, tokenized):
    task = load_run(tiny_run.run_dir, runtime=runtime)
    inputs = [RawInput(value=HUGE), RawInput(value="great film"), RawInput(value=HUGE.encode("utf-8"))]
    rows = predict(task, inputs, batch_size=2)
    assert len(rows) == 3 and max(tokenized) <= 12 * CHARS_PER_TOKEN
    assert_short_echo(rows[0]["input"])
    assert_short_echo(rows[2]["input"])
    assert rows[1]["input"] == "great film"


def test_cli_predict_of_a_huge_file_line_prints_a_short_line(tiny_run, runtime, tmp_path, capsys, tokenized):
    texts = tmp_path / "texts.txt"
    texts.write_text(f"great film\n{HUGE}\n", encoding="utf-8")
    with use_runtime(runtime):
        code = main(["predict", str(tiny_run.run_dir), "--file", str(texts)])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and len(out) < 2 * (ECHO_CHARS + 40)
    assert lines[0].startswith("great film  ->  ") and "an awful, tedious film" in lines[1]
    assert max(tokenized) <= 12 * CHARS_PER_TOKEN
    with use_runtime(runtime):
        code = main(["predict", str(tiny_run.run_dir), "--file", str(texts), "--json"])
    out = capsys.readouterr().out
    assert code == 0 and len(out) < 2000
    rows = json.loads(out)
    assert rows[0]["input"] == "great film"
    assert_short_echo(rows[1]["input"])


def test_a_huge_text_of_many_lines_is_echoed_on_one_short_line(tiny_run, runtime):
    text = "an awful, tedious film\n" * 200_000
    task, [row] = predict_run(tiny_run.run_dir, [text], runtime=runtime)
    assert len(row["input"]) <= ECHO_CHARS
    line = task.format_prediction(row)
    assert "\n" not in line and len(line) < ECHO_CHARS + 40


def test_a_huge_whitespace_text_is_a_one_line_usage_error(tiny_run, runtime):
    with pytest.raises(UsageError, match="is empty or only whitespace") as info:
        predict_run(tiny_run.run_dir, [" \n\t" * 1_000_000], runtime=runtime)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
