"""The recurrent classifiers: packed batches give exactly the result of each text alone
(padding costs nothing), the transformer wrapper, and the builders registered for
nlp.classify, shaped by the config and the meta they receive."""

from __future__ import annotations

import pytest
import torch

from dlguide import UsageError
from dlguide_nlp import models
from dlguide_nlp.classify import TextClassificationConfig
from dlguide_nlp.models import RecurrentClassifier, small_transformer


def make(cell, pooling, bidirectional, packed=True):
    torch.manual_seed(0)
    model = RecurrentClassifier(50, 3, cell=cell, embedding_dim=8, hidden_size=6, num_layers=2,
                                bidirectional=bidirectional, pooling=pooling, packed=packed)
    return model.eval()


def batch(lengths, width):
    gen = torch.Generator().manual_seed(1)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return torch.randint(2, 50, (len(lengths), width), generator=gen) * mask, mask


CASES = [(cell, pooling, bi) for cell in ("rnn", "lstm", "gru") for pooling in ("last", "mean", "max")
         for bi in (False, True)]


@pytest.mark.parametrize(("cell", "pooling", "bidirectional"), CASES)
def test_packed_equals_unpacked_on_unpadded_input(cell, pooling, bidirectional):
    ids, mask = batch([7, 7, 7], 7)
    with torch.no_grad():
        packed = make(cell, pooling, bidirectional)(ids, mask)
        unpacked = make(cell, pooling, bidirectional, packed=False)(ids, mask)
    torch.testing.assert_close(packed, unpacked)


@pytest.mark.parametrize(("cell", "pooling", "bidirectional"), CASES)
def test_padding_changes_nothing_when_packed(cell, pooling, bidirectional):
    ids, mask = batch([9, 4, 1], 12)
    model, unpacked = make(cell, pooling, bidirectional), make(cell, pooling, bidirectional, packed=False)
    with torch.no_grad():
        together = model(ids, mask)
        alone = torch.cat([unpacked(ids[i:i + 1, :n], mask[i:i + 1, :n]) for i, n in enumerate([9, 4, 1])])
        padded_unpacked = unpacked(ids, mask)
    torch.testing.assert_close(together, alone)
    if bidirectional:  # unpacked, the backward direction reads the padding first and carries it along
        assert not torch.allclose(padded_unpacked[1:], alone[1:], atol=1e-6)


def test_gradients_reach_the_embeddings_of_real_tokens_only():
    ids, mask = batch([5, 2], 5)
    model = make("lstm", "mean", True)
    model(ids, mask).sum().backward()
    assert model.embedding.weight.grad[0].abs().sum() == 0  # [PAD] is padding_idx and never used
    assert model.embedding.weight.grad[ids[0, 0]].abs().sum() > 0


def test_unknown_cell_and_pooling():
    with pytest.raises(UsageError, match="unknown recurrent cell 'cnn'"):
        RecurrentClassifier(10, 2, cell="cnn")
    with pytest.raises(UsageError, match="unknown pooling 'sum'"):
        RecurrentClassifier(10, 2, pooling="sum")


def test_small_transformer_ignores_padding_beyond_the_batch():
    torch.manual_seed(0)
    model = small_transformer(50, ["a", "b"], max_length=16, hidden_size=16, num_layers=1, num_heads=2).eval()
    ids, mask = batch([5, 3], 16)
    with torch.no_grad():
        wide = model(ids, mask)
        narrow = model(ids[:, :5], mask[:, :5])
    assert wide.shape == (2, 2)
    torch.testing.assert_close(wide, narrow)


META = {"classes": ["neg", "neutral", "pos"], "vocab_size": 40, "pad_id": 3, "max_length": 12}


@pytest.mark.parametrize(("name", "cell"), [("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)])
def test_recurrent_builders_take_their_cell_from_the_name_and_sizes_from_meta(name, cell):
    config = TextClassificationConfig(model=name, embedding_dim=8, hidden_size=6, bidirectional=True)
    model = getattr(models, f"build_{name}")(config, META)
    assert type(model.rnn) is cell and model.rnn.bidirectional
    assert model.embedding.weight.shape == (40, 8) and model.embedding.padding_idx == 3
    assert model.head.out_features == 3


def test_transformer_builder_without_pretrained_is_a_small_bert_over_the_run_vocabulary():
    config = TextClassificationConfig(model="transformer", hidden_size=16, num_layers=1, heads=2)
    bert = models.build_transformer(config, META).model.config
    assert (bert.vocab_size, bert.max_position_embeddings, bert.pad_token_id) == (40, 12, 3)
    assert bert.id2label == {0: "neg", 1: "neutral", 2: "pos"}
