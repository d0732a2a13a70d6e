"""Ranking metrics against cases worked out by hand, and against torchmetrics' retrieval functions."""

from __future__ import annotations

import math

import pytest
import torch
import torchmetrics.functional.retrieval as tmr

from dlguide_recsys.metrics import FUNCTIONS, CatalogueCoverage, UserAverage, top_k

# user A: hits at ranks 1 and 3 of 5, three relevant items; user B: one hit at rank 4 of its one
# relevant item; user C: two relevant items, none in the top 5
HITS = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
N_RELEVANT = torch.tensor([3, 1, 2])
EXPECTED = {
    "recall": [2 / 3, 1.0, 0.0],
    "precision": [2 / 5, 1 / 5, 0.0],
    "hit_rate": [1.0, 1.0, 0.0],
    "mrr": [1.0, 1 / 4, 0.0],
    # DCG 1/log2(2) + 1/log2(4) = 1.5 over the ideal 1 + 1/log2(3) + 1/log2(4); B: 1/log2(5) over 1
    "ndcg": [1.5 / (1 + 1 / math.log2(3) + 0.5), 1 / math.log2(5), 0.0],
    # precision at each hit (1, then 2/3) over min(3, 5); B: precision 1/4 at its hit over 1
    "map": [(1 + 2 / 3) / 3, 1 / 4, 0.0],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metric_per_user_matches_hand_computation(name):
    values = FUNCTIONS[name](HITS, N_RELEVANT)
    assert values.tolist() == pytest.approx(EXPECTED[name], abs=1e-6)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_user_average_over_batches_and_cutoff(name):
    metric = UserAverage(name, k=5)
    top = torch.arange(5).repeat(3, 1)
    valid = torch.ones_like(HITS)
    metric.update(top[:2], HITS[:2], valid[:2], N_RELEVANT[:2])
    metric.update(top[2:], HITS[2:], valid[2:], N_RELEVANT[2:])
    assert float(metric.compute()) == pytest.approx(sum(EXPECTED[name]) / 3, abs=1e-6)


def test_cutoff_reads_only_the_first_k_slots_and_skips_users_without_relevant_items():
    recall_at_2 = UserAverage("recall", k=2)
    no_relevant = torch.tensor([3, 1, 0])  # user C has nothing to find: it is not averaged in
    recall_at_2.update(torch.arange(5).repeat(3, 1), HITS, torch.ones_like(HITS), no_relevant)
    assert float(recall_at_2.compute()) == pytest.approx((1 / 3 + 0.0) / 2)


def test_top_k_never_ranks_excluded_items_and_marks_filler_slots():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.3, 0.2, 0.1, 0.0]])
    candidates = torch.tensor([[False, True, True, True], [True, False, False, False]])
    top, valid = top_k(scores, candidates, 2)
    assert top[0].tolist() == [1, 3] and valid[0].tolist() == [True, True]
    assert top[1, 0] == 0 and valid[1].tolist() == [True, False]  # one candidate: the second slot is filler


def test_catalogue_coverage_counts_distinct_recommended_items():
    coverage = CatalogueCoverage(n_items=10, k=2)
    top = torch.tensor([[0, 1, 2], [1, 3, 4]])
    valid = torch.tensor([[True, True, True], [True, False, True]])
    coverage.update(top, torch.zeros_like(valid), valid, torch.tensor([1, 1]))
    assert float(coverage.compute()) == pytest.approx(2 / 10)  # items 0 and 1; item 3 is filler, 2 and 4 past k


@pytest.mark.parametrize("name, reference", [
    ("recall", tmr.retrieval_recall), ("precision", tmr.retrieval_precision), ("ndcg", tmr.retrieval_normalized_dcg),
    ("hit_rate", tmr.retrieval_hit_rate), ("mrr", tmr.retrieval_reciprocal_rank),
])
def test_agrees_with_torchmetrics_on_random_rankings(name, reference):
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(20, 50, generator=generator)
    relevant = torch.rand(20, 50, generator=generator) < 0.15
    relevant[:, 0] = True  # every user has something to find
    k = 10
    top, valid = top_k(scores, torch.ones_like(relevant), k)
    ours = FUNCTIONS[name](relevant.gather(1, top), relevant.sum(1))
    theirs = torch.stack([reference(scores[u], relevant[u], top_k=k) for u in range(20)])
    assert ours.tolist() == pytest.approx(theirs.tolist(), abs=1e-5)
