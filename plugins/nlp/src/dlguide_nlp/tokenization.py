"""Tokenizers from Hugging Face ``tokenizers``: trained on the training texts (word-level,
WordPiece or BPE) or the pretrained model's own, saved as ``tokenizer.json`` in the run
directory and read back from there by eval and predict.

Texts become fixed-length id rows (padded to ``max_length``) so the core's default batching
stacks them; the models drop the padding again (packed sequences, attention masks).
``fixed_length`` makes the cutting and padding copy of a tokenizer once; ``encode`` uses it
for a whole split while training, or one text at a time for inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from dlguide import UsageError, first_line
from dlguide_nlp.config import TOKENIZER_KINDS

PAD, UNK = "[PAD]", "[UNK]"
#: [CLS] and [SEP] are kept in trained vocabularies so a transformer trained from scratch
#: gets the same sentence layout as a pretrained BERT
SPECIAL_TOKENS = [PAD, UNK, "[CLS]", "[SEP]"]
KINDS = TOKENIZER_KINDS
FILE_NAME = "tokenizer.json"


def train_tokenizer(texts: Sequence[str], kind: str, vocab_size: int, min_frequency: int = 1,
                    with_cls_sep: bool = False) -> Tokenizer:
    """A lower-casing tokenizer of ``kind`` learnt from ``texts`` (the training split only)."""
    if kind == "wordlevel":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=SPECIAL_TOKENS)
    elif kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=SPECIAL_TOKENS)
        tokenizer.decoder = decoders.WordPiece()
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS)
    else:
        raise UsageError(f"unknown tokenizer {kind!r}; expected one of {', '.join(KINDS)}")
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if with_cls_sep:
        from tokenizers.processors import BertProcessing

        tokenizer.post_processor = BertProcessing(("[SEP]", tokenizer.token_to_id("[SEP]")),
                                                  ("[CLS]", tokenizer.token_to_id("[CLS]")))
    return tokenizer


def pretrained_tokenizer(model_dir: Path) -> Tokenizer:
    """The fast tokenizer saved with a pretrained model (its ``tokenizer.json``)."""
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the tokenizer of {model_dir}: {first_line(exc)}") from None
    if not getattr(loaded, "is_fast", False):
        raise UsageError(f"{model_dir} has no fast tokenizer (tokenizer.json); save it with a fast tokenizer")
    return Tokenizer.from_str(loaded.backend_tokenizer.to_str())


def save_tokenizer(tokenizer: Tokenizer, run_dir: Path) -> Path:
    path = run_dir / FILE_NAME
    tmp = path.with_name(f".{FILE_NAME}.tmp")
    tokenizer.save(str(tmp))
    tmp.replace(path)
    return path


def load_tokenizer(run_dir: Path) -> Tokenizer:
    path = run_dir / FILE_NAME
    if not path.is_file():
        raise UsageError(f"{run_dir} has no {FILE_NAME}; the run's tokenizer is needed to read texts")
    return Tokenizer.from_file(str(path))


def pad_id(tokenizer: Tokenizer) -> int:
    found = tokenizer.token_to_id(PAD)
    if found is None:
        raise UsageError(f"the tokenizer has no padding token {PAD}")
    return found


@dataclasses.dataclass
class Encoded:
    input_ids: torch.Tensor  # (n, max_length) int64, padded with the tokenizer's [PAD]
    attention_mask: torch.Tensor  # (n, max_length) int64, 1 on real tokens
    truncated: int  # texts longer than max_length, cut to fit


def fixed_length(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """A copy of ``tokenizer`` that cuts and pads every text to ``max_length`` tokens (the
    caller's tokenizer keeps its settings)."""
    fixed = Tokenizer.from_str(tokenizer.to_str())
    fixed.enable_truncation(max_length)
    fixed.enable_padding(pad_id=pad_id(fixed), pad_token=PAD, length=max_length)
    return fixed


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> Encoded:
    """Token ids of ``texts`` with a tokenizer from ``fixed_length`` (cuts counted)."""
    length = tokenizer.padding["length"]
    encodings = tokenizer.encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(encodings), length)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long).reshape(len(encodings), length)
    return Encoded(ids, mask, sum(1 for e in encodings if e.overflowing))
