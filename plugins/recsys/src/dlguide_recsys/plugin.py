"""Entry point of dlguide-recsys. Imported by ``dlguide list``: registration only, no torch, numpy or scipy."""

from __future__ import annotations

import argparse

from dlguide import Registry, hookimpl


@hookimpl
def dlguide_register(registry: Registry) -> None:
    registry.add_task(
        "recsys.rank",
        "dlguide_recsys.rank:RankingTask",
        "top-k recommendation from implicit feedback: popularity, implicit ALS/BPR, MF, NeuMF, two-tower",
        # MF with BPR loss on ml-100k: 6 epochs reach about 1.6x popularity's validation NDCG@10
        demo={"model": "mf", "epochs": 6}, config="dlguide_recsys.config:RankingConfig",
    )
    # models and datasets built for recsys.rank: builder(config, meta) and loader(data_dir)
    for name, target, summary in (
        ("popularity", "models:build_popularity", "items ranked by training interactions, the same for every user"),
        ("als", "implicit_models:build_als", "implicit's alternating least squares, one iteration per epoch"),
        ("bpr", "implicit_models:build_bpr", "implicit's Bayesian personalised ranking, one pass per epoch"),
        ("mf", "models:build_mf", "matrix factorisation (user . item + item bias), trained with BPR loss"),
        ("neumf", "models:build_neumf", "neural collaborative filtering: GMF beside an MLP (He et al. 2017)"),
        ("two-tower", "models:build_two_tower", "user and item towers over ids and categorical features (hybrid)"),
    ):
        registry.add_model(f"recsys.{name}", f"dlguide_recsys.{target}", summary, tasks="recsys.rank")
    for name, attr, summary in (
        ("ml-100k", "ml_100k", "MovieLens 100k with user and item features, read from the recbole package"),
        ("movielens", "movielens", "MovieLens 100k, 1M, 20M/25M/latest files in data_dir"),
        ("interactions", "interactions_csv", "interactions.csv (user,item[,rating,timestamp]) + users/items.csv"),
    ):
        registry.add_dataset(f"recsys.{name}", f"dlguide_recsys.datasets:{attr}", summary, tasks="recsys.rank")


def _recommend(args: argparse.Namespace) -> int:
    from dlguide_recsys.recommend import cmd_recommend

    return cmd_recommend(args)


@hookimpl
def dlguide_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recommend", help="top items for a user, or similar items, from a recsys.rank run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--user", metavar="ID", help="recommend for this user id (as in the data)")
    p.add_argument("--item", metavar="ID", help="with --similar: list items similar to this item id")
    p.add_argument("--similar", action="store_true", help="items nearest to --item by their learnt vectors")
    p.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_recommend)
