"""The config of recsys.rank, in a module that imports no torch: ``dlguide info recsys.rank``
reads it without loading the task."""

from __future__ import annotations

import dataclasses

from dlguide import TrainConfig, UsageError, check_fractions, option

#: how interactions are split into train, val and test (dlguide_recsys.splits cuts them)
SPLITS = ("random", "leave-one-out", "temporal")


@dataclasses.dataclass
class RankingConfig(TrainConfig):
    epochs: int = option(30, "number of passes over the training data (implicit iterations for als and bpr)")
    batch_size: int = option(1024, "training interactions per batch; users per evaluation batch")
    # mf's best settings on ml-100k's validation split (benchmarks/recsys.py)
    lr: float = option(5e-3, "learning rate of the torch models (the peak rate for onecycle)")
    weight_decay: float = option(3e-5, "L2 penalty of the torch models (decoupled for adamw)")
    monitor: str = option("val/ndcg@10", "metric that picks the best checkpoint and drives early stopping")
    dataset: str = option("ml-100k", "ml-100k (offline, from the recbole package, or u.data in data_dir), "
                          "movielens (data_dir with u.data, ratings.dat or ratings.csv), interactions "
                          "(data_dir/interactions.csv, optional users.csv and items.csv) or another registered "
                          "loader", registry="dataset")
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
    model: str = option("mf", "popularity, als and bpr (implicit) are fitted on the training matrix; mf, neumf, "
                        "two-tower and other registered models are trained with 'loss'", registry="model")
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
