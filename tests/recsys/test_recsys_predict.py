"""Predicting with a finished recsys.rank run once its training files are gone: a known user's
top items (numeric ids read as JSON numbers or strings), the popularity fallback with its note,
bad inputs, and the same through ``dlguide predict``."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import write_clustered
from safetensors.torch import load_file

import dlguide_recsys.plugin
from dlguide import RawInput, UsageError, predict_run, run_task
from dlguide._cli import main
from dlguide_recsys.datasets import interactions_csv


@pytest.fixture(scope="module")
def trained(runtime, tmp_path_factory):
    """An mf run on clustered tastes (users 0, 2, 4... like items i0-i19, the others i20-i39), its
    data files deleted; and what each user rated, read before the files went."""
    data_dir = write_clustered(tmp_path_factory.mktemp("data") / "csv", user_prefix="")
    frame = interactions_csv(data_dir).interactions
    rated = frame.groupby("user")["item"].apply(set).to_dict()
    run = run_task("recsys.rank", runtime=runtime, out=tmp_path_factory.mktemp("runs") / "mf", progress="none",
                   overrides=["dataset=interactions", f"data_dir={data_dir}", "model=mf", "epochs=12", "seed=0",
                              "topk=[5,10]", "monitor=val/ndcg@5", "lr=0.05", "batch_size=128", "embedding_dim=16"])
    shutil.rmtree(data_dir)
    return run.run_dir, rated


def test_a_known_user_gets_unrated_items_of_their_taste_with_titles(trained, runtime):
    run_dir, rated = trained
    # a JSON number and a string name the same user
    task, rows = predict_run(run_dir, ["4", RawInput(value="4"), "5"], runtime=runtime)
    assert rows[0] == rows[1]
    for row, user, half in ((rows[0], "4", range(20)), (rows[2], "5", range(20, 40))):
        assert list(row) == ["input", "note", "items"] and row["input"] == user and row["note"] == ""
        items = [r["item"] for r in row["items"]]
        assert [r["rank"] for r in row["items"]] == list(range(1, 11))
        assert not set(items) & rated[user]
        scores = [r["score"] for r in row["items"]]
        assert scores == sorted(scores, reverse=True)
        assert all(r["title"] == f"Film {r['item'][1:]}" for r in row["items"])  # from the run, not the data
        # 6 items of the user's half are left unrated: they lead the list (a 12-epoch model on
        # 40 items ranks the user's taste first, not always perfectly)
        assert sum(int(item[1:]) in half for item in items[:5]) >= 4, (user, items)
    assert task.format_prediction(rows[0]).startswith("user 4: Film ")


def test_an_unknown_user_gets_the_most_popular_items_with_a_note(trained, runtime):
    run_dir, _ = trained
    _, rows = predict_run(run_dir, ["nobody", "4"], runtime=runtime)
    row = rows[0]
    assert row["input"] == "nobody"
    assert row["note"] == "user nobody is not in this run's data: the 10 most popular items instead"
    counts = load_file(str(run_dir / "user_items.safetensors"))["train_item_counts"]
    catalogue = json.loads((run_dir / "catalogue.json").read_text())
    assert [r["score"] for r in row["items"]] == sorted(counts.tolist(), reverse=True)[:10]
    assert all(counts[catalogue["item_ids"].index(r["item"])] == r["score"] for r in row["items"])
    assert rows[1]["note"] == ""  # a batch that mixes known and unknown users


@pytest.mark.parametrize("value", [[4], None, True, " "])
def test_an_input_that_is_not_a_user_id_is_a_usage_error(trained, runtime, value):
    run_dir, _ = trained
    with pytest.raises(UsageError, match="is not a user id; expected a JSON string or number"):
        predict_run(run_dir, [RawInput(value=value, name="bad")], runtime=runtime)


def test_dlguide_predict_prints_one_line_per_user_and_json(trained, dlguide_runtime, capsys):
    run_dir, _ = trained
    dlguide_runtime(dlguide_recsys.plugin)
    assert main(["predict", str(run_dir), "4", "nobody"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("user 4: Film ") and lines[0].count(";") == 9
    assert lines[1].startswith("user nobody (user nobody is not in this run's data: the 10 most popular")
    assert main(["predict", str(run_dir), "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["input"] == "4" and len(rows[0]["items"]) == 10


def test_dlguide_recommend_ranks_as_predict_does(trained, dlguide_runtime, runtime, capsys):
    run_dir, _ = trained
    dlguide_runtime(dlguide_recsys.plugin)
    assert main(["recommend", str(run_dir), "--user", "4", "-k", "10", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    _, rows = predict_run(run_dir, ["4"], runtime=runtime)
    assert shown == rows[0]  # the same row as predict's
