"""Per-sample outcomes of a test pass, so that two runs can be compared sample by sample.

During the test pass a task records, for each sample of a batch, what it got
(``self.run.record(correct=..., loss=...)``: a correct flag, a per-sample loss, a user's NDCG,
a case's Dice). The Trainer also takes a digest of every test sample (its tensors' bytes), in
the split's order; together they say whether two runs were tested on the same data. At the end
of the pass the columns are gathered from every process (evaluation shards the split into
contiguous shares in process order, so the gathered rows are in the split's order) and written
as ``outcomes.safetensors``, which ``dlguide compare`` reads.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlguide._errors import UsageError

if TYPE_CHECKING:
    from dlguide._strategy import Strategy

log = logging.getLogger("dlguide")

FILE = "outcomes.safetensors"
DIGESTS = "sample_digest"


def _row_tensors(batch: Any, n: int) -> list[torch.Tensor]:
    from dlguide._task import _tensors

    return [t for t in _tensors(batch) if t.dim() > 0 and t.shape[0] == n]


def sample_digests(batch: Any, n: int) -> torch.Tensor:
    """One 64-bit digest per sample of ``batch``: its row of every tensor whose first dimension
    is the batch's (inputs and targets), hashed."""
    rows = [t.detach().cpu().contiguous() for t in _row_tensors(batch, n)]
    out = torch.empty(n, dtype=torch.int64)
    for i in range(n):
        h = hashlib.blake2b(digest_size=8)
        for t in rows:
            h.update(t[i].numpy().tobytes() if t.dtype != torch.bfloat16 else t[i].float().numpy().tobytes())
        out[i] = int.from_bytes(h.digest(), "little", signed=True)
    return out


class OutcomeRecorder:
    """What one test pass records, per sample."""

    def __init__(self) -> None:
        self.columns: dict[str, list[torch.Tensor]] = {}
        self.digests: list[torch.Tensor] = []

    def add_batch(self, batch: Any, n: int) -> None:
        self.digests.append(sample_digests(batch, n))

    def record(self, columns: Mapping[str, Any]) -> None:
        for name, values in columns.items():
            if "/" in name or not name:
                raise ValueError(f"outcome name {name!r}: use a plain name such as 'correct' or 'loss'")
            tensor = torch.as_tensor(values).detach().reshape(-1).to("cpu", torch.float64)
            self.columns.setdefault(name, []).append(tensor)

    def collect(self, strategy: Strategy) -> dict[str, torch.Tensor]:
        """Every process's rows in the split's order; columns not recorded for every sample are dropped."""
        from dlguide._strategy import gather_rows

        digests = gather_rows(torch.cat(self.digests) if self.digests else torch.empty(0, dtype=torch.int64))
        names = strategy.broadcast(sorted(self.columns))
        out = {DIGESTS: digests}
        for name in names:
            parts = self.columns.get(name, [])
            local = torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)
            column = gather_rows(local)
            if len(column) != len(digests):
                log.warning("outcome %r was recorded for %d of %d test samples; it is not saved", name, len(column),
                            len(digests))
                continue
            out[name] = column
        return out


def data_digest(digests: torch.Tensor) -> str:
    return hashlib.sha256(digests.numpy().tobytes()).hexdigest()


def write_outcomes(path: Path, columns: Mapping[str, torch.Tensor], task: str) -> None:
    from safetensors.torch import save_file

    from dlguide._rundir import unique_temporary

    digests = columns[DIGESTS]
    meta = {"task": task, "samples": str(len(digests)), "data_digest": data_digest(digests)}
    tmp = unique_temporary(path)
    try:
        save_file({k: v.contiguous() for k, v in columns.items()}, str(tmp), metadata=meta)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_outcomes(run: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, columns) of a run's ``outcomes.safetensors``; a usage error saying how to make it."""
    from safetensors import safe_open

    path = Path(run) / FILE
    if not path.is_file():
        raise UsageError(f"{run} has no per-sample test outcomes ({FILE}); write them with 'dlguide eval {run}'")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            columns = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise UsageError(f"{path} cannot be read ({str(exc).splitlines()[0][:120]}); write it again with "
                         f"'dlguide eval {run}'") from None
    if DIGESTS not in columns or "data_digest" not in meta or "task" not in meta:
        raise UsageError(f"{path} is not a dlguide outcomes file")
    return meta, columns
