"""nlp.classify: text classification with an RNN, LSTM, GRU or a transformer.

    dlguide run nlp.classify --out runs/rt                                   # LSTM on Rotten Tomatoes
    dlguide run nlp.classify --set model=gru bidirectional=true pooling=mean tokenizer=bpe
    dlguide run nlp.classify --set model=transformer pretrained=minilm max_length=64 epochs=2 lr=5e-5
    dlguide run nlp.classify --set dataset=files data_dir=reviews text_column=review label_column=stars
    dlguide predict runs/rt "a triumph of style" --file more_texts.txt

The networks (``model``) and data sets (``dataset``) are the ones registered for the task
(``models`` and ``datasets`` say what their builders and loaders receive). The tokenizer is
trained on the training split only (or is the pretrained model's own) and saved as
``tokenizer.json`` in the run directory, where eval and predict find it; the class names,
vocabulary size and maximum length go to ``task.json``. So a finished run predicts without
its training data.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from tokenizers import Tokenizer
from torch import nn
from torch.utils.data import TensorDataset

from dlguide import (CLASSIFICATION_METRIC_MODES, DataSplits, RawInput, Task, UsageError, classification_metrics,
                     encode_classes, record_classification, write_confusion_matrix)
from dlguide_nlp import models, tokenization
from dlguide_nlp.config import TextClassificationConfig
from dlguide_nlp.datasets import TextData, add_missing_splits, pool_for_fold

log = logging.getLogger(__name__)

TRANSFORMER_CONFIG_DIR = "transformer"
#: a text to predict is cut to this many characters per token of max_length before it is
#: tokenized: far more than any token needs, and a pasted book costs no tokenizer time
CHARS_PER_TOKEN = 32
#: characters of the input text echoed in a prediction
ECHO_CHARS = 200


def _echo(raw: RawInput) -> str:
    """The first ``ECHO_CHARS`` characters of an input's text, "..." ending a longer one; of
    bytes, only the start is decoded (``decode`` has checked the whole is UTF-8)."""
    value = raw.value
    if isinstance(value, (bytes, bytearray)) and len(value) > 4 * ECHO_CHARS:
        text = bytes(value[:4 * ECHO_CHARS]).decode("utf-8", errors="ignore") + "..."
    else:
        text = raw.text()
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS - 3] + "..."




class TextClassificationTask(Task):
    """Train a text classifier; test it with accuracy, macro F1, per-class precision and
    recall and a confusion matrix; predict the class probabilities of texts."""

    Config = TextClassificationConfig
    config: TextClassificationConfig
    metric_modes: ClassVar[Mapping[str, str]] = CLASSIFICATION_METRIC_MODES
    input_kind: ClassVar[str] = "text"
    supports_folds = True
    export_input_names = ("input_ids", "attention_mask")
    export_output_names = ("logits",)
    #: the test split's texts, kept by ``build_data`` for ``reference_inputs``
    test_texts: Sequence[str] = ()

    def _own_run_dir(self) -> Path | None:
        """The run directory when this process writes into it (only the first of several does)."""
        return self.run_dir if self.run is None or self.run.is_writer else None

    def _tokenizer(self, train_texts: Sequence[str]) -> Tokenizer:
        """The run's saved tokenizer (eval, resume), else a new one, saved into the run."""
        cfg = self.config
        if self.run_dir is not None and (self.run_dir / tokenization.FILE_NAME).is_file():
            return tokenization.load_tokenizer(self.run_dir)
        pretrained = cfg.pretrained_dir()
        if pretrained is not None:
            tokenizer = tokenization.pretrained_tokenizer(pretrained)
        else:
            tokenizer = tokenization.train_tokenizer(train_texts, cfg.tokenizer, cfg.vocab_size, cfg.min_frequency,
                                                     with_cls_sep=cfg.model == "transformer")
        own = self._own_run_dir()
        if own is not None:
            tokenization.save_tokenizer(tokenizer, own)
        return tokenizer

    # -- data and model -----------------------------------------------------------------
    def build_data(self) -> DataSplits:
        cfg = self.config
        loaded = self.registered("dataset", cfg.dataset)(cfg)
        if not isinstance(loaded, TextData):
            raise UsageError(f"dataset nlp.{cfg.dataset} returned a {type(loaded).__name__}, not a "
                             "dlguide_nlp.datasets.TextData")
        data = add_missing_splits(loaded, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        data = pool_for_fold(data, cfg)  # dlguide cv: one fold of train + val is the validation split
        if "val" not in data.splits and cfg.monitor.startswith("val/"):
            raise UsageError(f"dataset {cfg.dataset!r} has no validation split with val_fraction="
                             f"{cfg.val_fraction}; raise val_fraction or set monitor=train/loss")
        tokenizer = self._tokenizer(data.splits["train"].texts)
        fixed = tokenization.fixed_length(tokenizer, cfg.max_length)
        datasets, truncated = {}, {}
        for name, split in data.splits.items():
            encoded = tokenization.encode(fixed, split.texts)
            truncated[name] = encoded.truncated
            if encoded.truncated:
                log.warning("cut %d of %d %s texts to max_length=%d tokens", encoded.truncated, len(split), name,
                            cfg.max_length)
            datasets[name] = TensorDataset(encoded.input_ids, encoded.attention_mask,
                                           torch.tensor(split.labels, dtype=torch.long))
        self.test_texts = list(data.splits["test"].texts) if "test" in data.splits else []
        self.meta = {"dataset": cfg.dataset, "classes": data.classes, "vocab_size": tokenizer.get_vocab_size(),
                     "pad_id": tokenization.pad_id(tokenizer), "max_length": cfg.max_length,
                     "sizes": {name: len(split) for name, split in data.splits.items()},
                     "dropped_empty": data.dropped_empty, "truncated": truncated}
        return DataSplits(train=datasets["train"], val=datasets.get("val"), test=datasets.get("test"))

    def build_model(self) -> nn.Module:
        """The registered network ``model``. A Hugging Face transformer's architecture is kept in
        the run's ``transformer/`` folder, and a run that has one (eval, predict, resume) is
        rebuilt from it: the pretrained folder it came from is not needed any more. The run
        directory stays the task's business, so builders remain ``(config, meta)``."""
        saved = self.run_dir / TRANSFORMER_CONFIG_DIR if self.run_dir is not None else None
        if saved is not None and (saved / "config.json").is_file():  # its weights are loaded next
            return models.transformer_from_config(saved, list(self.meta["classes"]))
        model = self.build_registered_model(self.config.model)
        own = self._own_run_dir()
        if isinstance(model, models.TransformerClassifier) and own is not None:
            models.save_architecture(model, own / TRANSFORMER_CONFIG_DIR)
        return model

    # -- steps --------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        input_ids, attention_mask, labels = batch
        return nn.functional.cross_entropy(self.model(input_ids, attention_mask), labels)

    def configure_metrics(self, stage: str) -> dict[str, Any]:
        return classification_metrics(len(self.meta["classes"]), stage)

    def validation_step(self, batch: Any, metrics: Mapping[str, Any]) -> torch.Tensor:
        input_ids, attention_mask, labels = batch
        logits = self.model(input_ids, attention_mask)
        for metric in metrics.values():
            metric.update(logits, labels)
        record_classification(self.run, logits, labels)  # in the test pass: per-text outcomes
        return nn.functional.cross_entropy(logits, labels)

    # -- after training -----------------------------------------------------------------
    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        return write_confusion_matrix(metrics, self.meta["classes"], run_dir,
                                      f"{self.name} on {self.meta['dataset']}: test confusion matrix")

    # -- inference ----------------------------------------------------------------------
    @functools.cached_property
    def _encoder(self) -> Tokenizer:
        """The run's tokenizer, cutting and padding to the run's max_length: read once per task."""
        if self.run_dir is None:
            raise UsageError("predict needs a finished run directory (dlguide predict RUN TEXT...)")
        return tokenization.fixed_length(tokenization.load_tokenizer(self.run_dir), int(self.meta["max_length"]))

    def decode(self, raw: RawInput) -> tuple[torch.Tensor, torch.Tensor]:
        """A text -> its (input_ids, attention_mask) row, cut to max_length tokens."""
        text = raw.text()
        if not text or text.isspace():  # no stripped copy of a long text
            raise UsageError(f"input {raw.label!r} is empty or only whitespace; expected a text to classify")
        max_length = int(self.meta["max_length"])
        bounded = text[:max_length * CHARS_PER_TOKEN]
        encoded = tokenization.encode(self._encoder, [bounded])
        if encoded.truncated or len(bounded) < len(text):
            log.warning("cut input %r to max_length=%d tokens", raw.label, max_length)
        return encoded.input_ids[0], encoded.attention_mask[0]

    def inference_files(self) -> list[str]:
        """The tokenizer, and a transformer's architecture."""
        saved = self.run_dir is not None and (self.run_dir / TRANSFORMER_CONFIG_DIR / "config.json").is_file()
        return [tokenization.FILE_NAME, *([TRANSFORMER_CONFIG_DIR] if saved else [])]

    def reference_inputs(self, data: DataSplits | None, count: int) -> list[RawInput]:
        """Test texts (kept by ``build_data``) as a client sends them."""
        texts = self.test_texts
        step = max(1, len(texts) // max(1, count))
        return [RawInput(value=text, name=f"test_{i}") for i, text in list(enumerate(texts))[::step][:count]]

    def predict_step(self, batch: Any) -> torch.Tensor:
        """Class probabilities, one row per text."""
        input_ids, attention_mask = batch
        return self.model(input_ids, attention_mask).float().softmax(-1)

    def encode(self, output: torch.Tensor, sample: Any, raw: RawInput, *, out_dir: Path | None = None
               ) -> dict[str, Any]:
        """The most likely class, its probability and the runners-up, named by the text (its
        first ``ECHO_CHARS`` characters: more than the core's short label of an input)."""
        return {"input": _echo(raw), **encode_classes(output, self.meta["classes"])}
