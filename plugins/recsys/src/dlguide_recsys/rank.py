"""recsys.rank: top-k recommendation from implicit feedback, every model under one protocol.

    dlguide run recsys.rank --out runs/mf                          # MF with BPR loss on ml-100k, random 80/10/10
    dlguide run recsys.rank --set model=als epochs=15              # implicit's ALS, one iteration per epoch
    dlguide run recsys.rank --set model=neumf split=leave-one-out evaluation=sampled   # the NCF protocol
    dlguide recommend runs/mf --user 196 -k 10
    dlguide recommend runs/mf --item 50 --similar
    dlguide predict runs/mf 196 1 42                               # top 10 per user id (a JSON value)

Every model goes through the same Trainer loop, split and evaluation code, and every pass
through ``self.model(users, items)`` or ``self.model(users)`` (the whole catalogue). Models
and datasets are looked up in the registry (``--set model=NAME dataset=NAME``). The torch
models (mf, neumf, two-tower, and any other registered model) take gradient steps on (user,
positive, sampled negatives) batches. popularity, als and bpr are fitted by counting or by
implicit: their one training "batch" per epoch is the whole training matrix (manual
optimisation, no gradients); ALS and BPR run one implicit iteration per epoch, so validation
picks their best epoch like any other model's, and popularity stops after its single epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlguide import DataSplits, RawInput, Task, UsageError, cv_seed
from dlguide_recsys.datasets import RawData
from dlguide_recsys.implicit_models import ImplicitFactors, fit_iteration
from dlguide_recsys.config import RankingConfig
from dlguide_recsys.interactions import Interactions, build_interactions
from dlguide_recsys.metrics import FUNCTIONS, RANKING_METRICS, CatalogueCoverage, UserAverage, top_k
from dlguide_recsys.models import Popularity, Recommender
from dlguide_recsys.recommend import CATALOGUE, USER_ITEMS, Catalogue, format_rows, top_items, write_catalogue
from dlguide_recsys.sampling import NegativeSampler, PositivePairs, RankingRows, WholeMatrix, sample_unseen
from dlguide_recsys.splits import split_interactions, user_fold

log = logging.getLogger("dlguide_recsys")

# models fitted on the whole training matrix, not by gradients; any other registered model
# (this plugin's mf, neumf and two-tower, or another package's) trains with the task's loss
FITTED_MODELS = ("popularity", "als", "bpr")
# items a prediction lists per user
PREDICT_TOP_K = 10




class RankingTask(Task):
    """Train a recommender on implicit feedback and rank items for users, evaluated with recall,
    precision, NDCG, hit rate, MRR, MAP and catalogue coverage at k."""

    Config = RankingConfig
    config: RankingConfig
    metric_modes: ClassVar[Mapping[str, str]] = {
        **{name: "max" for name in RANKING_METRICS}, "coverage": "max", "bpr_correct": "max"}
    input_kind: ClassVar[str] = "json"
    export_input_names = ("user",)
    export_output_names = ("scores",)
    supports_folds = True  # grouped by user: dlguide_recsys.splits.user_fold
    #: the test users' ids, kept by ``build_data`` for ``reference_inputs``
    test_user_ids: Sequence[str] = ()

    def __init__(self, config: RankingConfig, name: str = "") -> None:
        super().__init__(config, name)
        # popularity, als and bpr are not trained by gradients: they fit themselves in training_step
        self.automatic_optimization = config.model not in FITTED_MODELS  # type: ignore[misc]
        self.data: Interactions | None = None
        self.protocol: dict[str, str] = {}

    # -- data ---------------------------------------------------------------------------
    def build_data(self) -> DataSplits:
        cfg = self.config
        raw = self.registered("dataset", cfg.dataset)(cfg.data_dir)
        if not isinstance(raw, RawData):
            raise UsageError(f"dataset recsys.{cfg.dataset} returned a {type(raw).__name__}, not the RawData of "
                             "dlguide_recsys.datasets")
        data = build_interactions(raw, rating_threshold=cfg.rating_threshold,
                                  min_user_interactions=cfg.min_user_interactions,
                                  min_item_interactions=cfg.min_item_interactions)
        if max(cfg.topk) > data.n_items:
            raise UsageError(f"topk {max(cfg.topk)} is larger than the catalogue of {data.n_items} items")
        split = split_interactions(data, cfg.split, cfg.split_ratios, cfg.seed)
        if cfg.cv_folds >= 2:  # dlguide cv: folds of users, the test part untouched
            split = user_fold(data, split, cfg.split, cfg.split_ratios, cfg.cv_folds, cfg.cv_fold, cv_seed(cfg))
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
                        "ranking (no model knows them; 'dlguide predict' gives them popular items)")
                notes.append(note)
                log.warning("%s", note)
            users = np.flatnonzero(with_items & has_train)
            if stage == "test":
                self.test_user_ids = [data.user_ids[u] for u in users.tolist()]
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
        if self.automatic_optimization:
            train = PositivePairs(data.users[split.train], data.items[split.train])
            self.sampler = NegativeSampler(self.train_matrix, cfg.seed)
        else:  # one sample per process: every process takes part in each epoch's one step
            train = WholeMatrix(self.run.world_size if self.run is not None else 1)
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
        model = self.build_registered_model(self.config.model)
        if self.data is not None and isinstance(model, Recommender):
            # the feature codes are in the data only while training; a finished run's weights carry them
            model.set_feature_codes(self.data.user_features.codes, self.data.item_features.codes)
        return model

    @property
    def loss_name(self) -> str:
        cfg = self.config
        return cfg.loss if cfg.loss != "auto" else ("bce" if cfg.model == "neumf" else "bpr")

    # -- steps --------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | Mapping[str, torch.Tensor]:
        if not self.automatic_optimization:
            return self._fit_whole_matrix()
        assert self.model is not None
        users, positives = batch
        if self.loss_name == "softmax":
            # every item is a candidate: the positive's log-probability against the whole catalogue
            return F.cross_entropy(self.model(users), positives)
        epoch = self.run.epoch if self.run is not None else 0
        rows = self.run.batch_rows if self.run is not None else None
        negatives = self.sampler.sample(users, self.config.num_negatives, epoch, batch_idx, rows)
        # one pass scores each positive (column 0) beside its negatives
        items = torch.cat([positives[:, None], negatives], dim=1)
        logits = self.model(users[:, None].expand_as(items), items)
        if self.loss_name == "bpr":
            return -F.logsigmoid(logits[:, :1] - logits[:, 1:]).mean()
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)

    def _fit_whole_matrix(self) -> dict[str, torch.Tensor]:
        cfg, module = self.config, self.module
        started = time.perf_counter()
        if isinstance(module, Popularity):
            module.fit(np.asarray(self.train_matrix.sum(axis=0)).ravel())
            report: dict[str, float] = {}
            if self.run is not None:  # counting twice gives the same counts
                self.run.stop("popularity is fitted in one epoch (it counts interactions)")
        else:
            assert isinstance(module, ImplicitFactors), f"model {cfg.model!r} is not fitted by implicit"
            settings = {"regularization": cfg.regularization, "alpha": cfg.als_alpha,
                        "learning_rate": cfg.bpr_learning_rate}
            run = self.run
            if run is None or run.world_size == 1:
                report = fit_iteration(module, cfg.model, self.train_matrix, cfg.embedding_dim, settings, cfg.seed)
            else:  # implicit has no distributed mode: the first process fits, the others take its factors
                if run.is_writer and run.epoch == 0 and run.verbose:
                    print(f"{self.name}: implicit's {cfg.model} fits on the first process only; the other "
                          f"{run.world_size - 1} take its factors after each iteration", file=sys.stderr, flush=True)
                report = (fit_iteration(module, cfg.model, self.train_matrix, cfg.embedding_dim, settings, cfg.seed)
                          if run.is_writer else {})
                state, report = run.broadcast(({k: v.cpu() for k, v in module.state_dict().items()}
                                               if run.is_writer else None, report))
                module.load_state_dict(state)
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
        assert self.model is not None
        users, relevant, candidates = batch
        top, valid = top_k(self.model(users), candidates, max(self.config.topk))
        hits = relevant.gather(1, top) & valid
        n_relevant = (relevant & candidates).sum(1)
        for metric in metrics.values():
            metric.update(top, hits, valid, n_relevant)
        if self.run is not None:  # in the test pass: each user's figures, for dlguide compare
            self.run.record(**{f"{name}@{k}": FUNCTIONS[name](hits[:, :k], n_relevant)
                               for k in self.config.topk for name in ("ndcg", "recall")})
        return None

    # -- after training -----------------------------------------------------------------
    def final_metrics(self, metrics: Mapping[str, float]) -> Mapping[str, Any]:
        """The evaluation protocol, stored and printed beside the figures."""
        return dict(self.protocol)

    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        assert self.data is not None
        return write_catalogue(run_dir, self.data, self.train_matrix, self.seen)

    # -- inference: a user id -> the user's top items ------------------------------------
    @functools.cached_property
    def catalogue(self) -> Catalogue:
        """The ids, titles and users' items of a finished run (``catalogue.json``), read once."""
        if self.run_dir is None:
            raise UsageError("recommendations need a finished run directory (dlguide run recsys.rank --out DIR)")
        return Catalogue.read(self.run_dir)

    def user_id(self, raw: RawInput) -> str:
        """The user id an input names, as text (the catalogue's ids are text: 196 and "196" are one user)."""
        value = raw.value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
            raise UsageError(f"input {raw.label!r} is not a user id; expected a JSON string or number")
        return str(value).strip()

    def decode(self, raw: RawInput) -> torch.Tensor:
        """The user's model index, -1 for a user the model learnt nothing about (popular items instead)."""
        return torch.tensor(self.catalogue.model_index(self.user_id(raw)), dtype=torch.int64)

    def inference_files(self) -> list[str]:
        """The id maps and titles, and the items each user has seen (never recommended again)."""
        return [CATALOGUE, USER_ITEMS]

    def reference_inputs(self, data: DataSplits | None, count: int) -> list[RawInput]:
        """Test users' ids as a client sends them."""
        ids = self.test_user_ids
        step = max(1, len(ids) // max(1, count))
        return [RawInput(value=user, name=user) for user in ids[::step][:count]]

    def describe_input(self, sample: torch.Tensor) -> float:
        """1 for a user the model knows, 0 for one it gives popular items: drift is a rise of unknown users."""
        return float(int(sample) >= 0)

    def predict_step(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores of the whole catalogue for the known users (rows of index -1 stay NaN: not scored)."""
        assert self.model is not None
        known = batch >= 0
        scores = torch.full((len(batch), int(self.meta["n_items"])), math.nan, device=batch.device)
        if bool(known.any()):
            scores[known] = self.model(batch[known]).float()
        return scores

    def encode(self, output: torch.Tensor, sample: torch.Tensor, raw: RawInput, *,
               out_dir: Path | None = None) -> dict[str, Any]:
        found = top_items(self.catalogue, self.user_id(raw), int(sample), output, PREDICT_TOP_K)
        # the id as text, as the catalogue keeps it (the core would echo 196 as a number)
        return dataclasses.asdict(found)

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        head = f"user {row['input']}" + (f" ({row['note']})" if row["note"] else "")
        return head + ": " + "; ".join(format_rows(row["items"], compact=True))
