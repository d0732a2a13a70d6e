"""Text classifiers: the chapter's recurrent networks and a Hugging Face transformer.

Both take ``(input_ids, attention_mask)`` rows padded to a fixed length and return class
logits. The recurrent networks pack each batch (``pack_padded_sequence``), so padding
changes neither their result nor their cost; the transformer masks it out.

The builders registered for ``nlp.classify`` (``nlp.rnn``, ``nlp.lstm``, ``nlp.gru``,
``nlp.transformer``; ``--set model=<name>``) are called as ``builder(config, meta)``:
``config`` is the task's ``TextClassificationConfig`` and ``meta`` holds, from the data,

- ``classes``: the class names in label order (the head has one output per class),
- ``vocab_size``: the size of the run's tokenizer vocabulary (the embedding rows),
- ``pad_id``: the id of ``[PAD]`` (the embedding's padding row),
- ``max_length``: the tokens per row (the position embeddings a transformer needs),

besides facts no builder needs (``dataset``, split ``sizes``, ``dropped_empty``, ``truncated``).
A builder makes a new network; the task keeps a transformer's architecture in the run
directory and rebuilds a finished run's network from it (see ``TextClassificationTask.build_model``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dlguide import UsageError, first_line
from dlguide_nlp.config import POOLINGS

if TYPE_CHECKING:
    from dlguide_nlp.classify import TextClassificationConfig

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentClassifier(nn.Module):
    """Embedding, a stack of RNN (tanh), LSTM or GRU layers, pooling over time, a linear head.

    ``last`` pools the final hidden state of each direction (forward: after the last real
    token; backward: after the first), ``mean`` and ``max`` pool the outputs of real tokens.
    """

    def __init__(self, vocab_size: int, num_classes: int, *, cell: str = "lstm", embedding_dim: int = 128,
                 hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 pooling: str = "max", padding_idx: int = 0, packed: bool = True) -> None:
        super().__init__()
        if cell not in CELLS:
            raise UsageError(f"unknown recurrent cell {cell!r}; expected one of {', '.join(CELLS)}")
        if pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        #: False runs the cells over the padding too: only to show what packing saves
        self.packed = packed
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        extra = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = CELLS[cell](embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                               bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0, **extra)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # a text whose tokens were all unknown still has length 1 (its first, padding, token)
        lengths = attention_mask.sum(1).clamp(min=1)
        packed = self.packed
        if torch.compiler.is_exporting():
            # an exported graph has no data-dependent width and no packed sequences: the cells run
            # over the whole padded row, which for one direction gives the packed result exactly
            # (padding comes after the last real token); the backward direction would start on padding
            if self.rnn.bidirectional and packed:
                raise UsageError("a bidirectional packed recurrent network has no exported form "
                                 "(its backward pass starts at each text's own last token)")
            width, packed = input_ids.shape[1], False
        else:
            width = int(lengths.max())
        embedded = self.dropout(self.embedding(input_ids[:, :width]))
        if packed:
            packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
            outputs, hidden = self.rnn(packed)
            outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=width)
        else:
            outputs, hidden = self.rnn(embedded)
        if isinstance(hidden, tuple):  # an LSTM's (h, c)
            hidden = hidden[0]
        if self.pooling == "last":
            directions = 2 if self.rnn.bidirectional else 1
            if packed:
                pooled = torch.cat(list(hidden[-directions:]), dim=1)
            else:  # unpacked, the state "after the last token" has to be picked from the outputs
                idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.size(2))
                pooled = outputs.gather(1, idx).squeeze(1)
                if directions == 2:
                    half = self.rnn.hidden_size
                    pooled = torch.cat([pooled[:, :half], outputs[:, 0, half:]], dim=1)
        else:
            real = (torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(2)
            if self.pooling == "mean":
                pooled = (outputs * real).sum(1) / lengths[:, None].to(outputs.dtype)
            else:
                pooled = outputs.masked_fill(~real, float("-inf")).max(1).values
        return self.head(self.dropout(pooled))


class TransformerClassifier(nn.Module):
    """``AutoModelForSequenceClassification`` behind the same call as the recurrent networks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():  # no data-dependent width in an exported graph: padding is masked
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        width = int(attention_mask.sum(1).max().clamp(min=1))  # attention costs the square of the width
        return self.model(input_ids=input_ids[:, :width], attention_mask=attention_mask[:, :width]).logits


def _labels(classes: list[str]) -> dict[str, object]:
    return {"num_labels": len(classes), "id2label": dict(enumerate(classes)),
            "label2id": {name: i for i, name in enumerate(classes)}}


def pretrained_transformer(model_dir: Path, classes: list[str], dropout: float | None = None) -> nn.Module:
    """A pretrained encoder from a local ``from_pretrained`` folder with a new classification head."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    extra = {"hidden_dropout_prob": dropout} if dropout is not None else {}
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "some weights were newly initialised" is the point of fine-tuning
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True,
                                                                   **_labels(classes), **extra)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load a pretrained model from {model_dir}: {first_line(exc)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return TransformerClassifier(model)


def save_architecture(model: TransformerClassifier, config_dir: Path) -> None:
    """Write the transformer's Hugging Face config into ``config_dir`` (whole or not at all, as a
    process building the same run may read it)."""
    tmp = config_dir.with_name(f".{config_dir.name}.tmp")
    model.model.config.save_pretrained(str(tmp))
    tmp.replace(config_dir)


def transformer_from_config(config_dir: Path, classes: list[str]) -> nn.Module:
    """The architecture saved in ``config_dir`` with fresh weights (a finished run loads its own next)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(str(config_dir), local_files_only=True, **_labels(classes))
    return TransformerClassifier(AutoModelForSequenceClassification.from_config(config))


def small_transformer(vocab_size: int, classes: list[str], *, max_length: int, hidden_size: int = 128,
                      num_layers: int = 2, num_heads: int = 2, dropout: float = 0.1, pad_token_id: int = 0) -> nn.Module:
    """A small BERT trained from scratch on the run's own tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    if hidden_size % num_heads:
        raise UsageError(f"hidden_size {hidden_size} is not divisible by heads {num_heads}")
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        max_position_embeddings=max_length, pad_token_id=pad_token_id, **_labels(classes))
    return TransformerClassifier(BertForSequenceClassification(config))


# -- the builders registered for nlp.classify ------------------------------------------------
def build_recurrent(config: TextClassificationConfig, meta: Mapping[str, Any], *, cell: str) -> nn.Module:
    """A ``RecurrentClassifier`` of ``cell`` shaped by the config's recurrent keys."""
    return RecurrentClassifier(
        int(meta["vocab_size"]), len(meta["classes"]), cell=cell, embedding_dim=config.embedding_dim,
        hidden_size=config.hidden_size, num_layers=config.num_layers, bidirectional=config.bidirectional,
        dropout=config.dropout, pooling=config.pooling, padding_idx=int(meta["pad_id"]), packed=config.packed)


build_rnn = functools.partial(build_recurrent, cell="rnn")
build_lstm = functools.partial(build_recurrent, cell="lstm")
build_gru = functools.partial(build_recurrent, cell="gru")


def build_transformer(config: TextClassificationConfig, meta: Mapping[str, Any]) -> nn.Module:
    """The ``pretrained`` encoder with a new head, or without it a small BERT from scratch."""
    classes = list(meta["classes"])
    pretrained = config.pretrained_dir()
    if pretrained is not None:
        return pretrained_transformer(pretrained, classes)
    return small_transformer(int(meta["vocab_size"]), classes, max_length=int(meta["max_length"]),
                             hidden_size=config.hidden_size, num_layers=config.num_layers, num_heads=config.heads,
                             pad_token_id=int(meta["pad_id"]))
