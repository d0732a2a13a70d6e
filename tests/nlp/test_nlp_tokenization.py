"""Tokenizers trained on the training texts, their save/reload round trip, truncation counts
and the MiniLM package's own tokenizer."""

from __future__ import annotations

import pytest

from dlguide import UsageError
from dlguide_nlp import tokenization as tok
from dlguide_nlp.classify import TextClassificationConfig

TEXTS = ["A gripping, beautifully acted thriller.", "Dull and far too long.", "The acting is gripping",
         "a thriller that is long and dull", "Beautifully shot, but dull."] * 4


@pytest.mark.parametrize("kind", tok.KINDS)
def test_trained_tokenizer_round_trips_through_the_run_directory(tmp_path, kind):
    tokenizer = tok.train_tokenizer(TEXTS, kind, vocab_size=200)
    assert tokenizer.token_to_id(tok.PAD) == 0 and tokenizer.token_to_id(tok.UNK) == 1
    path = tok.save_tokenizer(tokenizer, tmp_path)
    assert path == tmp_path / "tokenizer.json" and not list(tmp_path.glob(".*tmp"))
    reloaded = tok.load_tokenizer(tmp_path)
    probe = ["Gripping, DULL acting!", "zebra"]
    first, again = (tok.encode(tok.fixed_length(t, 8), probe) for t in (tokenizer, reloaded))
    assert first.input_ids.tolist() == again.input_ids.tolist()
    assert first.input_ids.shape == (2, 8) and first.attention_mask[:, -1].tolist() == [0, 0]
    assert tokenizer.get_vocab() == reloaded.get_vocab()
    assert tokenizer.padding is None and tokenizer.truncation is None  # fixed_length works on a copy


def test_words_unseen_in_training_become_unknown():
    tokenizer = tok.train_tokenizer(TEXTS, "wordlevel", vocab_size=200, min_frequency=2)
    ids = tok.encode(tok.fixed_length(tokenizer, 4), ["gripping zebra"]).input_ids[0].tolist()
    assert ids[0] == tokenizer.token_to_id("gripping") and ids[1] == 1 and ids[2:] == [0, 0]


def test_long_texts_are_cut_and_counted():
    tokenizer = tok.train_tokenizer(TEXTS, "wordpiece", vocab_size=200)
    encoded = tok.encode(tok.fixed_length(tokenizer, 3), ["dull " * 50, "dull", "dull dull dull"])
    assert encoded.truncated == 1
    assert encoded.attention_mask.sum(1).tolist() == [3, 1, 3]


def test_transformer_vocabularies_wrap_texts_in_cls_and_sep():
    tokenizer = tok.train_tokenizer(TEXTS, "wordpiece", vocab_size=200, with_cls_sep=True)
    ids = tok.encode(tok.fixed_length(tokenizer, 6), ["dull " * 20]).input_ids[0].tolist()
    assert ids[0] == tokenizer.token_to_id("[CLS]") and ids[-1] == tokenizer.token_to_id("[SEP]")


def test_packaged_minilm_tokenizer():
    model_dir = TextClassificationConfig(model="transformer", pretrained="minilm").pretrained_dir()
    tokenizer = tok.pretrained_tokenizer(model_dir)
    encoded = tok.encode(tok.fixed_length(tokenizer, 10), ["A gripping thriller."])
    ids = encoded.input_ids[0].tolist()
    assert ids[0] == tokenizer.token_to_id("[CLS]") and tokenizer.token_to_id("gripping") in ids
    assert tok.pad_id(tokenizer) == 0


def test_missing_saved_tokenizer(tmp_path):
    with pytest.raises(UsageError, match="has no tokenizer.json"):
        tok.load_tokenizer(tmp_path)
