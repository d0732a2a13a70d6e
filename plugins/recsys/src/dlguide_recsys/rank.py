"""recsys.rank: top-k recommendation from implicit feedback, every model under one protocol.

    dlguide run recsys.rank --out runs/mf                          # MF with BPR loss on ml-100k, random 80/10/10
    dlguide run recsys.rank --set model=als epochs=15              # implicit's ALS, one iteration per epoch
    dlguide run recsys.rank --set model=neumf split=leave-one-out evaluation=sampled   # the NCF protocol
    dlguide recommend runs/mf --user 196 -k 10
    dlguide recommend runs/mf --item 50 --similar

Every model goes through the same Trainer loop, split and evaluation code. The torch models
(mf, neumf, two-tower) take gradient steps on (user, positive, sampled negatives) batches.
popularity, als and bpr are fitted by counting or by implicit: their one training "batch" per
epoch is the whole training matrix (manual optimisation, no gradients); ALS and BPR run one
implicit iteration per epoch, so validation picks their best epoch like any other model's,
and popularity stops after its single epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlguide._config import check_fractions, option
from dlguide._errors import UsageError
from dlguide._task import DataSplits, Task, TrainConfig
from dlguide_recsys.datasets import LOADERS, load_raw
from dlguide_recsys.implicit_models import ImplicitFactors, factor_width, fit_iteration
from dlguide_recsys.interactions import Interactions, build_interactions
from dlguide_recsys.metrics import RANKING_METRICS, CatalogueCoverage, UserAverage, top_k
from dlguide_recsys.models import MatrixFactorization, NeuMF, Popularity, Recommender, TwoTower
from dlguide_recsys.sampling import NegativeSampler, PositivePairs, RankingRows, WholeMatrix, sample_unseen
from dlguide_recsys.splits import SPLITS, split_interactions

log = logging.getLogger("dlguide_recsys")

GRADIENT_MODELS = ("mf", "neumf", "two-tower")
MODELS = ("popularity", "als", "bpr", *GRADIENT_MODELS)


@dataclasses.dataclass
class RankingConfig(TrainConfig):
    epochs: int = option(30, "number of passes over the training data (implicit iterations for als and bpr)")
    batch_size: int = option(1024, "training interactions per batch; users per evaluation batch")
    # mf's best settings on ml-100k's validation split (benchmarks/recsys.py)
    lr: float = option(5e-3, "learning rate of the torch models (the peak rate for onecycle)")
    weight_decay: float = option(3e-5, "L2 penalty of the torch models (decoupled for adamw)")
    monitor: str = option("val/ndcg@10", "metric that picks the best checkpoint and drives early stopping")
    dataset: str = option("ml-100k", "ml-100k (offline, from the recbole package, or u.data in data_dir), "
                          "movielens (data_dir with u.data, ratings.dat or ratings.csv) or interactions "
                          "(data_dir/interactions.csv, optional users.csv and items.csv)", choices=tuple(LOADERS))
    rating_threshold: float = option(0.0, "ratings at or above this count as positives, lower ones are dropped "
                                     "(0: every rated item is a positive)")
    min_user_interactions: int = option(0, "k-core: drop users with fewer interactions, repeatedly with items")
    min_item_interactions: int = option(0, "k-core: drop items with fewer interactions, repeatedly with users")
    split: str = option("random", "random (per user), leave-one-out (per user, by time) or temporal (global "
                        "time cut)", choices=SPLITS)
    split_ratios: list[float] = option([0.8, 0.1, 0.1], "train/validation/test shares for random and temporal "
                                       "(leave-one-out uses validation only when its share is > 0)")
    evaluation: str = option("full", "full: rank every item; sampled: rank each user's held-out items among "
                             "eval_negatives random unseen items", choices=("full", "sampled"))
    eval_negatives: int = option(100, "random unseen items per user in sampled evaluation")
    exclude_train: bool = option(True, "full ranking leaves out the user's training (and, when testing, "
                                 "validation) items")
    topk: list[int] = option([10], "cut-offs k of the ranking metrics")
    model: str = option("mf", "popularity, als, bpr (implicit), mf, neumf or two-tower", choices=MODELS)
    embedding_dim: int = option(64, "embedding size of the torch models; factors of als and bpr")
    hidden: list[int] = option([64, 32, 16], "layer sizes of neumf's MLP and of each two-tower tower")
    dropout: float = option(0.0, "dropout in the MLPs of neumf and two-tower")
    loss: str = option("auto", "bpr (pairwise, against sampled negatives), bce (pointwise, as in NCF), softmax "
                       "(cross-entropy over the whole catalogue: no negatives are sampled) or auto: bce for "
                       "neumf, bpr otherwise", choices=("auto", "bpr", "bce", "softmax"))
    num_negatives: int = option(4, "sampled negative items per training interaction")
    use_ids: bool = option(True, "two-tower: embed user and item ids beside the features (false: content-based)")
    regularization: float = option(0.01, "L2 regularisation of als and bpr (implicit's)")
    als_alpha: float = option(1.0, "confidence scaling of als: confidence = 1 + alpha * interaction")
    bpr_learning_rate: float = option(0.01, "learning rate of implicit's bpr (SGD)")

    def validate(self) -> None:
        super().validate()
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios) \
                or abs(sum(self.split_ratios) - 1) > 1e-6 or self.split_ratios[0] <= 0:
            raise UsageError(f"invalid value for 'split_ratios': {self.split_ratios}; expected three shares "
                             "train,val,test that sum to 1 with train > 0")
        if not self.topk or any(k < 1 for k in self.topk):
            raise UsageError(f"invalid value for 'topk': {self.topk}; expected cut-offs >= 1")
        for key in ("embedding_dim", "num_negatives", "eval_negatives"):
            if getattr(self, key) < 1:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected an integer >= 1")
        if any(h < 1 for h in self.hidden) or not self.hidden:
            raise UsageError(f"invalid value for 'hidden': {self.hidden}; expected layer sizes >= 1")
        check_fractions(self, "dropout")
        stage, _, name = self.monitor.partition("/")
        metric, at, k = name.partition("@")
        if stage in ("val", "test") and at and k.isdigit() and int(k) not in self.topk:
            raise UsageError(f"monitor {self.monitor!r} needs k={k} among topk {self.topk}; add it or change monitor")
        if stage == "val" and self.split_ratios[1] == 0:
            raise UsageError(f"monitor {self.monitor!r} needs a validation split, but split_ratios gives it 0; "
                             "set monitor=train/loss or a validation share")


class RankingTask(Task):
    """Train a recommender on implicit feedback and rank items for users, evaluated with recall,
    precision, NDCG, hit rate, MRR, MAP and catalogue coverage at k."""

    Config = RankingConfig
    config: RankingConfig

    def __init__(self, config: RankingConfig, name: str = "") -> None:
        super().__init__(config, name)
        # popularity, als and bpr are not trained by gradients: they fit themselves in training_step
        self.automatic_optimization = config.model in GRADIENT_MODELS  # type: ignore[misc]
        self.data: Interactions | None = None
        self.protocol: dict[str, str] = {}
        self.catalogue: Any = None  # ids and titles of a loaded run, read by dlguide_recsys.recommend

    # -- data ---------------------------------------------------------------------------
    def build_data(self) -> DataSplits:
        cfg = self.config
        raw = load_raw(cfg.dataset, cfg.data_dir)
        data = build_interactions(raw, rating_threshold=cfg.rating_threshold,
                                  min_user_interactions=cfg.min_user_interactions,
                                  min_item_interactions=cfg.min_item_interactions)
        if max(cfg.topk) > data.n_items:
            raise UsageError(f"topk {max(cfg.topk)} is larger than the catalogue of {data.n_items} items")
        split = split_interactions(data, cfg.split, cfg.split_ratios, cfg.seed)
        self.data = data
        self.train_matrix = data.matrix(split.train)
        self.seen = data.matrix()
        val_matrix, test_matrix = data.matrix(split.val), data.matrix(split.test)
        has_train = np.diff(self.train_matrix.indptr) > 0
        notes = list(data.notes)
        eval_sets = {}
        for stage, relevant, offset in (("val", val_matrix, 1), ("test", test_matrix, 2)):
            with_items = np.diff(relevant.indptr) > 0
            cold = int((with_items & ~has_train).sum())
            if cold:
                note = (f"{cold} {stage} users have no training interactions and are left out of the {stage} "
                        "ranking (no model knows them; 'dlguide recommend' gives them popular items)")
                notes.append(note)
                log.warning("%s", note)
            users = np.flatnonzero(with_items & has_train)
            if len(users):
                eval_sets[stage] = self._ranking_rows(stage, users, relevant, val_matrix, offset)
        if "val" not in eval_sets and cfg.monitor.startswith("val/"):
            raise UsageError(f"the {split.description} split leaves no validation users; set monitor=train/loss "
                             "or change split_ratios")
        if "test" not in eval_sets:
            raise UsageError(f"the {split.description} split leaves no test users with training interactions")
        self.protocol = self._describe(data, split.description, {s: len(r) for s, r in eval_sets.items()})
        self.meta = {
            "dataset": cfg.dataset, "source": raw.source, "n_users": data.n_users, "n_items": data.n_items,
            "interactions": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
            "user_features": {"sizes": data.user_features.sizes, "widths": data.user_features.widths},
            "item_features": {"sizes": data.item_features.sizes, "widths": data.item_features.widths},
            "notes": notes, "protocol": self.protocol,
        }
        if cfg.model in GRADIENT_MODELS:
            train = PositivePairs(data.users[split.train], data.items[split.train])
            self.sampler = NegativeSampler(self.train_matrix, cfg.seed)
        else:
            train = WholeMatrix()
        return DataSplits(train=train, val=eval_sets.get("val"), test=eval_sets["test"])

    def _ranking_rows(self, stage: str, users: np.ndarray, relevant: Any, val_matrix: Any, offset: int) -> RankingRows:
        cfg = self.config
        if cfg.evaluation == "sampled":
            negatives = sample_unseen(self.seen, users, cfg.eval_negatives, cfg.seed + offset)
            return RankingRows(users, relevant, ((relevant + negatives) > 0).tocsr(), include=True)
        excluded = self.train_matrix if stage == "val" else self.train_matrix + val_matrix
        if not cfg.exclude_train:
            excluded = excluded.multiply(0).tocsr()
        return RankingRows(users, relevant, excluded.tocsr(), include=False)

    def _describe(self, data: Interactions, split: str, users: Mapping[str, int]) -> dict[str, str]:
        cfg = self.config
        if cfg.evaluation == "sampled":
            candidates = (f"sampled, not full ranking: each user's held-out items among {cfg.eval_negatives} "
                          "random items the user never interacted with")
        elif cfg.exclude_train:
            candidates = (f"full ranking of all {data.n_items} items, excluding the user's training items "
                          "(and, for test, validation items)")
        else:
            candidates = f"full ranking of all {data.n_items} items, the user's training items included"
        feedback = ("implicit: every rating is a positive" if cfg.rating_threshold <= 0
                    else f"implicit: ratings >= {cfg.rating_threshold:g} are positives")
        if cfg.min_user_interactions > 1 or cfg.min_item_interactions > 1:
            feedback += f"; k-core users >= {cfg.min_user_interactions}, items >= {cfg.min_item_interactions}"
        return {
            "protocol/data": f"{cfg.dataset}: {data.n_users} users, {data.n_items} items, "
                             f"{len(data.users)} interactions",
            "protocol/feedback": feedback,
            "protocol/split": split,
            "protocol/candidates": candidates,
            "protocol/k": ", ".join(map(str, cfg.topk)),
            "protocol/users": ", ".join(f"{stage} {n}" for stage, n in users.items()),
        }

    # -- model --------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        cfg, meta = self.config, self.meta
        n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
        model: Recommender
        if cfg.model == "popularity":
            model = Popularity(n_users, n_items)
        elif cfg.model in ("als", "bpr"):
            model = ImplicitFactors(n_users, n_items, factor_width(cfg.model, cfg.embedding_dim))
        elif cfg.model == "mf":
            model = MatrixFactorization(n_users, n_items, cfg.embedding_dim)
        elif cfg.model == "neumf":
            model = NeuMF(n_users, n_items, cfg.embedding_dim, cfg.hidden, cfg.dropout)
        else:
            if not cfg.use_ids and not (meta["user_features"]["sizes"] and meta["item_features"]["sizes"]):
                raise UsageError("two-tower with use_ids=false needs user and item features (users.csv and "
                                 "items.csv, or the MovieLens user and movie files)")
            model = TwoTower(n_users, n_items, cfg.embedding_dim, cfg.hidden, cfg.dropout, cfg.use_ids,
                             meta["user_features"], meta["item_features"])
            if self.data is not None:
                model.user_tower.set_codes(self.data.user_features.codes)
                model.item_tower.set_codes(self.data.item_features.codes)
        return model

    @property
    def loss_name(self) -> str:
        cfg = self.config
        return cfg.loss if cfg.loss != "auto" else ("bce" if cfg.model == "neumf" else "bpr")

    # -- steps --------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | Mapping[str, torch.Tensor]:
        if not self.automatic_optimization:
            return self._fit_whole_matrix()
        users, positives = batch
        if self.loss_name == "softmax":
            # every item is a candidate: the positive's log-probability against the whole catalogue
            return F.cross_entropy(self.model.score_all(users), positives)
        epoch = self.trainer.epoch if self.trainer is not None else 0
        negatives = self.sampler.sample(users, self.config.num_negatives, epoch, batch_idx)
        pos = self.model.score(users, positives)[:, None]
        neg = self.model.score(users[:, None].expand_as(negatives), negatives)
        if self.loss_name == "bpr":
            return -F.logsigmoid(pos - neg).mean()
        logits = torch.cat([pos, neg], dim=1)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)

    def _fit_whole_matrix(self) -> dict[str, torch.Tensor]:
        cfg, model = self.config, self.model
        started = time.perf_counter()
        if isinstance(model, Popularity):
            model.fit(np.asarray(self.train_matrix.sum(axis=0)).ravel())
            report: dict[str, float] = {}
            if self.trainer is not None:  # counting twice gives the same counts
                self.trainer.should_stop = True
                self.trainer.stop_reason = "popularity is fitted in one epoch (it counts interactions)"
        else:
            assert isinstance(model, ImplicitFactors)
            settings = {"regularization": cfg.regularization, "alpha": cfg.als_alpha,
                        "learning_rate": cfg.bpr_learning_rate}
            report = fit_iteration(model, cfg.model, self.train_matrix, cfg.embedding_dim, settings, cfg.seed)
        report["fit_seconds"] = time.perf_counter() - started
        return {key: torch.tensor(value) for key, value in report.items()}

    def configure_metrics(self, stage: str) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for k in self.config.topk:
            for name in RANKING_METRICS:
                metrics[f"{name}@{k}"] = UserAverage(name, k)
            metrics[f"coverage@{k}"] = CatalogueCoverage(int(self.meta["n_items"]), k)
        return metrics

    def validation_step(self, batch: Any, metrics: Mapping[str, Any]) -> None:
        users, relevant, candidates = batch
        top, valid = top_k(self.model.score_all(users), candidates, max(self.config.topk))
        hits = relevant.gather(1, top) & valid
        n_relevant = (relevant & candidates).sum(1)
        for metric in metrics.values():
            metric.update(top, hits, valid, n_relevant)
        return None

    # -- after training -----------------------------------------------------------------
    def final_metrics(self, metrics: Mapping[str, float]) -> Mapping[str, Any]:
        """The evaluation protocol, stored and printed beside the figures."""
        return dict(self.protocol)

    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        from dlguide_recsys.recommend import write_catalogue

        assert self.data is not None
        return write_catalogue(run_dir, self.data, self.train_matrix, self.seen)

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        """Top-10 items for each user id given."""
        from dlguide_recsys.recommend import recommend

        return [dataclasses.asdict(recommend(self, user, 10)) for user in inputs]

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        from dlguide_recsys.recommend import format_rows

        head = f"user {row['query']}" + (f" ({row['note']})" if row["note"] else "")
        return head + ": " + "; ".join(format_rows(row["rows"], compact=True))
