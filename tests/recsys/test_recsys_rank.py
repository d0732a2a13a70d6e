"""recsys.rank end to end on small files: every model through the Trainer (and through a
wrapped model only), the stored protocol, exact resume of an implicit model, eval, and bad settings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

import dlguide_recsys.plugin
from dlguide import UsageError, evaluate_run, predict_run, resume_run, run_task
from dlguide.testing import GuardedStrategy, check_export

# 40 items: cut-offs 5 and 10; lr suits a few dozen batches
SMALL = ["dataset=interactions", "topk=[5,10]", "monitor=val/ndcg@5", "lr=0.05", "batch_size=128", "seed=0",
         "embedding_dim=16", "hidden=[32,16]"]
EPOCHS = {"popularity": 1, "als": 5, "bpr": 30, "mf": 12, "neumf": 12, "two-tower": 12, "mf-softmax": 12}
EXTRA = {"bpr": ["bpr_learning_rate=0.05"], "mf-softmax": ["loss=softmax", "lr=0.02"]}


@pytest.fixture(scope="module")
def runs(runtime, clustered_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {model: run_task("recsys.rank", runtime=runtime, out=out / model, progress="none",
                            overrides=[*SMALL, f"data_dir={clustered_dir}", f"model={model.removesuffix('-softmax')}",
                                       f"epochs={EPOCHS[model]}", *EXTRA.get(model, [])])
            for model in EPOCHS}


def test_plugin_hooks_are_valid(dlguide_check_hooks):
    assert dlguide_check_hooks(dlguide_recsys.plugin) == ["dlguide_add_commands", "dlguide_register"]


def test_plugin_module_imports_nothing_heavy():
    code = "import sys, dlguide_recsys.plugin; print(sorted(m for m in ('torch', 'numpy', 'implicit') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_registered_target_loads_and_models_and_datasets_are_built_for_the_task(runtime):
    assert runtime.registry.choices("model", "recsys.rank") == ["als", "bpr", "mf", "neumf", "popularity",
                                                               "two-tower"]
    assert runtime.registry.choices("dataset", "recsys.rank") == ["interactions", "ml-100k", "movielens"]
    for entry in runtime.registry.entries():
        assert callable(entry.load()), entry.name


@pytest.mark.parametrize("model", ["popularity", "als", "bpr", "mf", "neumf", "two-tower"])
def test_every_model_calls_its_network_through_the_wrapped_model(runtime, clustered_dir, tmp_path, model):
    # GuardedStrategy fails any forward pass around task.model, as DDP would train it unsynchronised
    result = run_task("recsys.rank", runtime=runtime, out=tmp_path / model, progress="none",
                      strategy=GuardedStrategy(device="cpu"),
                      overrides=[*SMALL, f"data_dir={clustered_dir}", f"model={model}", "fast_dev_run=true"])
    assert (result.run_dir / "model.safetensors").is_file() and "test/ndcg@5" in result.metrics


def test_softmax_loss_calls_the_network_through_the_wrapped_model(runtime, clustered_dir, tmp_path):
    run_task("recsys.rank", runtime=runtime, out=tmp_path / "softmax", progress="none",
             strategy=GuardedStrategy(device="cpu"),
             overrides=[*SMALL, f"data_dir={clustered_dir}", "model=mf", "loss=softmax", "fast_dev_run=true"])


@pytest.mark.parametrize("model", ["als", "bpr", "mf", "neumf", "two-tower", "mf-softmax"])
def test_learned_models_beat_popularity_on_clustered_tastes(runs, model):
    popular = runs["popularity"].metrics
    learned = runs[model].metrics
    assert learned["test/ndcg@5"] > popular["test/ndcg@5"] + 0.1, (model, learned["test/ndcg@5"])
    assert learned["test/recall@10"] > popular["test/recall@10"]


def test_popularity_stops_after_one_epoch_and_implicit_models_train_per_epoch(runs):
    assert len(runs["popularity"].run_dir.joinpath("metrics.jsonl").read_text().splitlines()) == 1
    als_epochs = [json.loads(line) for line in runs["als"].run_dir.joinpath("metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in als_epochs] == [1, 2, 3, 4, 5]
    assert als_epochs[-1]["train/loss"] < als_epochs[0]["train/loss"]  # implicit's own ALS loss
    weights = load_file(str(runs["als"].run_dir / "model.safetensors"))
    assert weights["user_factors"].shape == (60, 16) and int(weights["iterations"]) >= 1


def test_metrics_json_holds_the_protocol_beside_the_figures(runs):
    metrics = json.loads((runs["mf"].run_dir / "metrics.json").read_text())
    assert {f"test/{m}@{k}" for m in ("recall", "precision", "ndcg", "hit_rate", "mrr", "map", "coverage")
            for k in (5, 10)} <= metrics.keys()
    assert metrics["protocol/split"] == "random per-user 80/10/10 (seed 0)"
    assert metrics["protocol/candidates"].startswith("full ranking of all 40 items, excluding the user's training")
    assert metrics["protocol/k"] == "5, 10"
    assert metrics["protocol/users"] == "val 60, test 60"


def test_leave_one_out_with_sampled_negatives_is_labelled(runtime, clustered_dir, tmp_path):
    result = run_task("recsys.rank", runtime=runtime, out=tmp_path / "loo", progress="none",
                      overrides=[*SMALL, f"data_dir={clustered_dir}", "model=mf", "epochs=3", "split=leave-one-out",
                                 "evaluation=sampled", "eval_negatives=9"])
    metrics = result.metrics
    assert metrics["protocol/candidates"].startswith("sampled, not full ranking: each user's held-out items among 9")
    assert metrics["protocol/split"].startswith("leave-one-out by time")
    # one held-out item among 10 candidates: recall@10 covers all of them
    assert metrics["test/recall@10"] == pytest.approx(1.0)


def test_two_tower_without_ids_ranks_from_features_alone(runtime, clustered_dir, tmp_path):
    result = run_task("recsys.rank", runtime=runtime, out=tmp_path / "content", progress="none",
                      overrides=[*SMALL, f"data_dir={clustered_dir}", "model=two-tower", "use_ids=false", "epochs=8"])
    # the users' group feature and the items' genre feature say everything about these tastes
    assert result.metrics["test/hit_rate@5"] > 0.7
    # a loaded run builds its model without the data: the feature codes come from its weights
    _, rows = predict_run(result.run_dir, ["u0", "u1"], runtime=runtime)
    assert all(int(r["item"][1:]) < 20 for r in rows[0]["items"][:5])
    assert all(int(r["item"][1:]) >= 20 for r in rows[1]["items"][:5])


def test_resumed_als_run_ends_with_the_same_factors(runtime, clustered_dir, tmp_path):
    sets = [*SMALL, f"data_dir={clustered_dir}", "model=als", "monitor=train/loss", "monitor_mode=min"]
    straight = run_task("recsys.rank", runtime=runtime, out=tmp_path / "straight", progress="none",
                        overrides=[*sets, "epochs=4"])
    run_task("recsys.rank", runtime=runtime, out=tmp_path / "split", progress="none", overrides=[*sets, "epochs=2"])
    resumed = resume_run(tmp_path / "split", overrides=["epochs=4"], runtime=runtime, progress="none")
    a = load_file(str(straight.run_dir / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "model.safetensors"))
    assert int(a["iterations"]) == int(b["iterations"]) == 4
    assert (a["item_factors"] - b["item_factors"]).abs().max() < 1e-4


def test_predict_and_eval_use_the_saved_run(runs, runtime):
    task, rows = predict_run(runs["mf"].run_dir, ["u0", "nobody"], runtime=runtime)
    lines = [task.format_prediction(row) for row in rows]
    assert lines[0].startswith("user u0: Film ") and lines[0].count(";") == 9
    assert lines[1].startswith("user nobody (user nobody is not in this run's data: the 10 most popular")
    again = evaluate_run(runs["mf"].run_dir, runtime=runtime)
    assert again["test/ndcg@10"] == pytest.approx(runs["mf"].metrics["test/ndcg@10"], abs=1e-6)
    assert {k: v for k, v in again.items() if k.startswith("protocol/")} == {
        k: v for k, v in runs["mf"].metrics.items() if k.startswith("protocol/")}


@pytest.mark.parametrize("sets, message", [
    (["topk=[50]", "monitor=val/ndcg@50"], "topk 50 is larger than the catalogue of 40 items"),
    (["topk=[5]", "monitor=val/ndcg@10"], "monitor 'val/ndcg@10' needs k=10 among topk [5]"),
    (["split_ratios=[0.8,0.3,0.1]"], "invalid value for 'split_ratios'"),
    (["model=svd"], "invalid value for 'model': 'svd'; registered models: als, bpr, mf, neumf, popularity, "
                    "two-tower"),
    (["dataset=netflix"], "invalid value for 'dataset': 'netflix'; registered datasets: interactions, ml-100k, "
                          "movielens"),
    (["split=temporal", "dataset=interactions"], None),
])
def test_bad_settings_are_one_line_usage_errors(runtime, clustered_dir, tmp_path, sets, message):
    overrides = [*SMALL, f"data_dir={clustered_dir}", "epochs=1", "model=popularity", *sets]
    if message is None:  # a valid setting, for contrast
        run_task("recsys.rank", runtime=runtime, out=tmp_path / "ok", progress="none", overrides=overrides)
        return
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        run_task("recsys.rank", runtime=runtime, out=tmp_path / "bad", progress="none", overrides=overrides)


def test_test_users_without_training_interactions_are_left_out_with_a_note(runtime, tmp_path, caplog):
    rows = ["user,item,timestamp"] + [f"{u},{i},{i}" for u in range(10) for i in range(10) if (u + i) % 3]
    rows += ["late,3,100", "late,4,101"]  # a user seen only after the time cut
    (tmp_path / "interactions.csv").write_text("\n".join(rows) + "\n")
    result = run_task("recsys.rank", runtime=runtime, out=tmp_path / "run", progress="none",
                      overrides=["dataset=interactions", f"data_dir={tmp_path}", "model=popularity", "topk=[3]",
                                 "monitor=val/ndcg@3", "split=temporal"])
    meta = json.loads((result.run_dir / "task.json").read_text())
    assert any("test users have no training interactions and are left out" in n for n in meta["notes"])
    assert "left out of the test ranking" in caplog.text
    _, rows = predict_run(result.run_dir, ["late", "1"], runtime=runtime)
    assert rows[0]["note"] == "user late has no training interactions: the 10 most popular items instead"
    assert rows[1]["note"] == "" and len(rows[1]["items"]) == 3  # user 1 rated all but 3 of the 10 items


@pytest.mark.parametrize("model", ["als", "mf", "neumf", "two-tower"])
def test_the_scoring_model_exports_and_verifies(runs, runtime, tmp_path, model):
    manifest = check_export(runs[model].run_dir, tmp_path / "bundle", runtime=runtime)
    assert manifest["inputs"][0] == {"name": "user", "shape": ["batch"], "dtype": "int64"}
    assert {"catalogue.json", "user_items.safetensors"} <= set(manifest["files"])
