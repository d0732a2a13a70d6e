"""recsys.rank under two processes (``--nproc-per-node 2``, gloo): matrix factorisation draws
each negative for its place in the global batch, so two processes train and rank as one;
implicit's ALS, which has no distributed mode, fits on the first process and the others take
its factors."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_two_processes_train_matrix_factorisation_as_one(dlguide_distributed_run):
    dlguide_distributed_run("recsys.rank", "model=mf", "epochs=2")


@pytest.mark.slow
def test_als_fits_on_the_first_process_and_says_so(dlguide_distributed_run):
    _, _, stderr = dlguide_distributed_run("recsys.rank", "model=als", "epochs=2", ignore=("train/fit_seconds",))
    line = "recsys.rank: implicit's als fits on the first process only; the other 1 take its factors after each iteration"
    assert stderr.count(line) == 1
