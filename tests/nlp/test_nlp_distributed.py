"""nlp.classify under two processes (``--nproc-per-node 2``, gloo): an LSTM without dropout
trains and evaluates as one process, and the run's tokenizer is written once."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_two_processes_train_an_lstm_as_one(dlguide_distributed_run, tmp_path):
    dlguide_distributed_run("nlp.classify", "model=lstm", "epochs=1", "limit_train_batches=4", "embedding_dim=8",
                            "hidden_size=8", "max_length=12", "batch_size=16", "dropout=0")
    one, two = (sorted(p.name for p in (tmp_path / f"nlp-classify-{n}").iterdir()) for n in (1, 2))
    assert one == two  # the same files, the tokenizer's among them, from the one writing process
