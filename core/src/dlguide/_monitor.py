"""Drift monitoring: what a served model sees and predicts, against its bundle's reference.

At export, every reference input drawn from the test split is predicted; each sample is
summarised by two values (``Task.describe_input``: one number, ``Task.describe_output``: a
class name or a score) and their distributions are kept in the manifest as *bins*: the
reference's deciles for numbers, the class names for classes. A server counts live samples in
the same bins (counters that add up across worker processes) and compares the two
distributions with the population stability index,

    PSI = sum over bins of (live - reference) * ln(live / reference),

the credit-scoring rule of thumb reading PSI < 0.1 as stable, 0.1-0.2 as a shift worth a
look and > 0.2 as drift. Counts are cumulative since the model version was loaded.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlguide._task import Task

#: PSI above which a signal is called drifted
DRIFT_PSI = 0.2
#: live samples below which no verdict is given
MIN_OBSERVED = 30
#: bins of a numeric signal: the reference's deciles
NUMERIC_BINS = 10
_EPS = 1e-4  # keeps ln() finite for a bin that one side never filled
NONE_BIN = "none"


def _numeric_reference(values: Sequence[float]) -> dict[str, Any]:
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    edges = sorted(set(np.quantile(data, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]).tolist()))
    counts = Counter(numeric_bin(edges, v) for v in data.tolist())
    return {"kind": "numeric", "edges": edges, "count": int(len(data)), "mean": float(data.mean()),
            "std": float(data.std()), "fractions": {b: counts[b] / len(data) for b in sorted(counts)}}


def numeric_bin(edges: Sequence[float], value: float) -> str:
    """The bin of ``value`` among the reference's decile edges: ``b0`` below the first edge."""
    import bisect

    return f"b{bisect.bisect_right(list(edges), value)}"


def reference_statistics(inputs: Sequence[float | None], predictions: Sequence[str | float | None]
                         ) -> dict[str, Any]:
    """The reference distributions of the described inputs and predictions (the manifest's
    ``statistics``); a signal that the task does not describe is left out."""
    out: dict[str, Any] = {}
    values = [v for v in inputs if v is not None and math.isfinite(v)]
    if values:
        out["input"] = _numeric_reference(values)
    labels = [p for p in predictions if isinstance(p, str)]
    scores = [float(p) for p in predictions if isinstance(p, (int, float)) and math.isfinite(p)]
    if labels:
        counts = Counter(labels)
        out["prediction"] = {"kind": "class", "count": len(labels),
                             "fractions": {c: n / len(labels) for c, n in sorted(counts.items())}}
    elif scores:
        out["prediction"] = _numeric_reference(scores)
    return out


def psi(live: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """Population stability index of two distributions over named bins (counts or fractions)."""
    bins = set(live) | set(reference)
    total_live = sum(live.values()) or 1.0
    total_ref = sum(reference.values()) or 1.0
    value = 0.0
    for b in bins:
        p = max(live.get(b, 0.0) / total_live, _EPS)
        q = max(reference.get(b, 0.0) / total_ref, _EPS)
        value += (p - q) * math.log(p / q)
    return value


class DriftMonitor:
    """Bins one model's live samples as its reference does and sums up the difference."""

    def __init__(self, task: Task, statistics: Mapping[str, Any] | None) -> None:
        self.task = task
        self.statistics = dict(statistics or {})

    @classmethod
    def for_model(cls, loaded: Any) -> DriftMonitor:
        """The monitor of a loaded model (``dlguide._export.LoadedModel``): its bundle's statistics,
        or none for a model served straight from a run directory."""
        manifest = loaded.manifest or {}
        return cls(loaded.task, manifest.get("statistics"))

    @property
    def has_reference(self) -> bool:
        return bool(self.statistics)

    def _bin(self, signal: str, value: str | float | None) -> str:
        if value is None:
            return NONE_BIN
        ref = self.statistics.get(signal)
        if isinstance(value, str):
            return value
        if not math.isfinite(value):
            return NONE_BIN
        if ref is None or ref.get("kind") != "numeric":
            return NONE_BIN
        return numeric_bin(ref["edges"], value)

    def bins(self, sample: Any, output: Any) -> tuple[str, str]:
        """(input bin, prediction bin) of one served sample."""
        return (self._bin("input", self.task.describe_input(sample)),
                self._bin("prediction", self.task.describe_output(output)))

    def summary(self, input_counts: Mapping[str, float], prediction_counts: Mapping[str, float]) -> dict[str, Any]:
        """The live distributions beside the reference's, each signal's PSI and the verdict."""
        observed = int(sum(prediction_counts.values()) or sum(input_counts.values()))
        out: dict[str, Any] = {"reference": self.has_reference, "observed": observed,
                               "threshold_psi": DRIFT_PSI, "min_observed": MIN_OBSERVED}
        verdicts = []
        for signal, counts in (("input", input_counts), ("prediction", prediction_counts)):
            ref = self.statistics.get(signal)
            live_total = sum(counts.values())
            live = {b: n / live_total for b, n in sorted(counts.items())} if live_total else {}
            entry: dict[str, Any] = {"live": live}
            if ref is not None:
                entry["reference"] = ref["fractions"]
                entry["kind"] = ref["kind"]
                if ref["kind"] == "numeric":
                    entry["edges"] = ref["edges"]
                entry["psi"] = round(psi(counts, ref["fractions"]), 6) if live_total else None
                if live_total >= MIN_OBSERVED:
                    verdicts.append(entry["psi"] > DRIFT_PSI)
            out[signal] = entry
        out["drift"] = any(verdicts) if verdicts else None
        return out

    @staticmethod
    def gauges(summary: Mapping[str, Any]) -> dict[str, float]:
        """``{"input": psi, "prediction": psi}`` of a summary, for signals that have both sides."""
        return {s: float(summary[s]["psi"]) for s in ("input", "prediction")
                if isinstance(summary.get(s), Mapping) and summary[s].get("psi") is not None}


def describe_all(task: Task, pairs: Iterable[tuple[Any, Any]]) -> tuple[list[float | None], list[str | float | None]]:
    """The described inputs and outputs of (sample, output) pairs."""
    inputs, outputs = [], []
    for sample, output in pairs:
        inputs.append(task.describe_input(sample))
        outputs.append(task.describe_output(output))
    return inputs, outputs
