"""``dlguide recommend`` on a short ml-100k run: a user's top items with titles, the fallback for
an unknown user, similar items, and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dlguide._cli import main
from dlguide import run_task
from dlguide_recsys.datasets import ml_100k


@pytest.fixture(scope="module")
def ml100k_runs(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml100k")
    common = ["seed=0", "lr=5e-3", "embedding_dim=32"]
    return {model: run_task("recsys.rank", runtime=runtime, out=out / model, progress="none",
                            overrides=[*common, f"model={model}", f"epochs={epochs}"]).run_dir
            for model, epochs in (("mf", 1), ("popularity", 1))}


def recommend(capsys, *args):
    code = main(["recommend", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_top_items_for_a_user_have_titles_and_exclude_what_they_rated(ml100k_runs, capsys):
    code, out, _ = recommend(capsys, ml100k_runs["mf"], "--user", "196", "-k", "10", "--json")
    assert code == 0
    result = json.loads(out)
    assert list(result) == ["input", "note", "items"] and result["input"] == "196"
    assert result["note"] == "" and [r["rank"] for r in result["items"]] == list(range(1, 11))
    scores = [r["score"] for r in result["items"]]
    assert scores == sorted(scores, reverse=True)
    inter = ml_100k(None).interactions
    rated = set(inter.loc[inter["user"] == "196", "item"])
    assert not rated & {r["item"] for r in result["items"]}
    assert all(r["title"] and r["title"] != r["item"] for r in result["items"])
    code, out, _ = recommend(capsys, ml100k_runs["mf"], "--user", "196", "-k", "3")
    lines = out.splitlines()
    assert lines[0] == "top 3 items for user 196 (mf):" and len(lines) == 4
    assert lines[1].lstrip().startswith("1. ") and "score " in lines[1]


def test_unknown_user_gets_popular_items_with_a_note(ml100k_runs, capsys):
    code, out, _ = recommend(capsys, ml100k_runs["mf"], "--user", "99999", "-k", "5")
    assert code == 0
    assert out.splitlines()[0] == "note: user 99999 is not in this run's data: the 5 most popular items instead"
    assert "Star Wars" in out  # the most rated film of ml-100k


def test_similar_items(ml100k_runs, capsys):
    code, out, _ = recommend(capsys, ml100k_runs["mf"], "--item", "50", "--similar", "-k", "5")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "5 items most similar to 50 (Star Wars) (mf, cosine similarity):" and len(lines) == 6
    assert not any(line.split()[1] == "50" for line in lines[1:])


@pytest.mark.parametrize("args, message", [
    (["--user", "196", "-k", "5000"], "-k 5000 is larger than the 1682 items of the catalogue"),
    (["--item", "999999", "--similar"], "item '999999' is not in this run's catalogue (ids such as 1, 2, 3)"),
    (["--item", "50"], "--item lists items similar to an item: add --similar"),
    (["--user", "196", "--item", "50"], "recommend needs either --user ID or --item ID --similar"),
])
def test_bad_requests_are_usage_errors(ml100k_runs, capsys, args, message):
    code, _, err = recommend(capsys, ml100k_runs["mf"], *args)
    assert code == 2 and err.strip() == f"dlguide: error: {message}"


def test_popularity_has_no_item_vectors(ml100k_runs, capsys):
    code, _, err = recommend(capsys, ml100k_runs["popularity"], "--item", "50", "--similar")
    assert code == 2 and "model 'popularity' has no item vectors to compare" in err


def test_command_line_exit_code(ml100k_runs):
    env = {**os.environ, "DLGUIDE_DISABLE_PLUGINS": "vision,nlp,medical"}
    res = subprocess.run([sys.executable, "-m", "dlguide", "recommend", str(ml100k_runs["mf"]), "--user", "196",
                          "-k", "2000"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("dlguide: error: -k 2000 is larger than the")
