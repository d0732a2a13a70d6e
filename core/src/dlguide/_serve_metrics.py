"""Prometheus metrics of ``dlguide serve``, summed over its uvicorn workers.

prometheus_client's multiprocess mode: every worker writes its values to memory-mapped files
in ``PROMETHEUS_MULTIPROC_DIR`` (a temporary folder ``dlguide serve`` makes and removes), and a
scrape of any worker reads them all. Counters and histograms add up over workers (also over
workers that have exited); gauges say how they combine (``livesum``: the workers alive now).

Drift: each served sample's (input bin, prediction bin) from the model's ``DriftMonitor`` is
counted by model, version and bin, so the counts add up over workers too; the PSI gauges are
computed from the summed counts when ``/metrics`` is scraped.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_DRIFT_FAMILIES = {"input": "dlguide_drift_input_samples", "prediction": "dlguide_drift_prediction_samples"}

log = logging.getLogger("dlguide.serve")


def drift_monitor(loaded: Any) -> Any:
    """The drift monitor of a loaded model: its bundle's reference statistics, or none."""
    from dlguide._monitor import DriftMonitor

    return DriftMonitor.for_model(loaded)


class ServeMetrics:
    """The metrics one worker updates; ``render`` gives the text of a scrape over all workers."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values
        from prometheus_client.process_collector import ProcessCollector

        if not os.path.isdir(os.environ.get(MULTIPROC_ENV, "")):
            raise RuntimeError(f"{MULTIPROC_ENV} must name an existing folder before the server starts")
        # prometheus_client picks its value class when first imported: if that happened before the
        # folder was set (a plugin imported it), pick again so every value goes to the shared files
        values.ValueClass = values.get_value_class()
        self.requests = Counter("dlguide_requests", "HTTP requests by model, route and status code",
                                ["model", "route", "status"], registry=None)
        self.latency = Histogram("dlguide_request_duration_seconds", "time from request to answer",
                                 ["model", "route"], buckets=LATENCY_BUCKETS, registry=None)
        self.batch_size = Histogram("dlguide_batch_size", "samples per dynamic batch (one predict_samples call)",
                                    ["model"], buckets=BATCH_BUCKETS, registry=None)
        self.samples = Counter("dlguide_samples", "samples predicted", ["model"], registry=None)
        self.queue_depth = Gauge("dlguide_queue_depth", "decoded samples waiting for a batch", ["model"],
                                 multiprocess_mode="livesum", registry=None)
        self.model_info = Gauge("dlguide_model_info", "1 for the version of each model being served",
                                ["model", "version", "task", "runtime"], multiprocess_mode="livemax", registry=None)
        self.drift = {signal: Counter(family, f"served samples by model, version and {signal} bin",
                                      ["model", "version", "bin"], registry=None)
                      for signal, family in _DRIFT_FAMILIES.items()}
        self.cpu = Gauge("dlguide_process_cpu_seconds", "CPU seconds used by the worker processes",
                         multiprocess_mode="livesum", registry=None)
        self.memory = Gauge("dlguide_process_resident_memory_bytes", "resident memory of the worker processes",
                            multiprocess_mode="livesum", registry=None)
        self.workers = Gauge("dlguide_workers", "worker processes serving", multiprocess_mode="livesum",
                             registry=None)
        self.workers.set(1)
        self._process = ProcessCollector(registry=None)
        self.refresh_process()

    # -- updates --------------------------------------------------------------------------
    def request(self, model: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(model, route, str(status)).inc()
        self.latency.labels(model, route).observe(seconds)

    def batch(self, model: str, size: int) -> None:
        self.batch_size.labels(model).observe(size)
        self.samples.labels(model).inc(size)

    def serving(self, model: str, version: str, task: str, runtime: str, old: tuple[str, str] | None) -> None:
        """Mark ``version`` as the one served (and the previous ``(version, task)`` as no longer)."""
        if old is not None and old[0] != version:
            self.model_info.labels(model, old[0], old[1], runtime).set(0)
        self.model_info.labels(model, version, task, runtime).set(1)

    def observe(self, model: str, version: str, monitor: Any, samples: Sequence[Any], outputs: Sequence[Any]) -> None:
        """Count each sample's drift bins; a monitor that fails is logged and never fails a request."""
        try:
            pairs = [monitor.bins(sample, output) for sample, output in zip(samples, outputs)]
        except Exception:
            log.exception("drift monitor of %s failed; these samples are not counted", model)
            return
        for input_bin, prediction_bin in pairs:
            self.drift["input"].labels(model, version, str(input_bin)).inc()
            self.drift["prediction"].labels(model, version, str(prediction_bin)).inc()

    def refresh_process(self) -> None:
        """This worker's CPU time and resident memory, read from /proc (Linux; elsewhere left at 0)."""
        for family in self._process.collect():
            for sample in family.samples:
                if sample.name == "process_cpu_seconds_total":
                    self.cpu.set(sample.value)
                elif sample.name == "process_resident_memory_bytes":
                    self.memory.set(sample.value)

    # -- scrapes ----------------------------------------------------------------------------
    @staticmethod
    def _families() -> list[Any]:
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return list(registry.collect())

    @staticmethod
    def _drift_counts(families: Iterable[Any], model: str, version: str) -> dict[str, dict[str, float]]:
        counts: dict[str, dict[str, float]] = {signal: {} for signal in _DRIFT_FAMILIES}
        names = {family: signal for signal, family in _DRIFT_FAMILIES.items()}
        for family in families:
            signal = names.get(family.name)
            if signal is None:
                continue
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_total") and labels.get("model") == model and labels.get("version") == version:
                    bins = counts[signal]
                    bins[labels["bin"]] = bins.get(labels["bin"], 0.0) + sample.value
        return counts

    def drift_summary(self, model: str, version: str, monitor: Any, families: Iterable[Any] | None = None) -> dict:
        """``monitor.summary`` of the counts of ``version`` of ``model`` summed over every worker."""
        counts = self._drift_counts(self._families() if families is None else families, model, version)
        return monitor.summary(counts["input"], counts["prediction"])

    def render(self, served: Mapping[str, tuple[str, Any]]) -> bytes:
        """The scrape: every worker's metrics, and ``dlguide_drift_psi`` of each served model
        (``served``: name -> (version, drift monitor)) from the summed counts."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import GaugeMetricFamily

        self.refresh_process()
        families = self._families()
        psi = GaugeMetricFamily("dlguide_drift_psi", "population stability index of the served samples against "
                                "the model's reference statistics", labels=["model", "signal"])
        for name, (version, monitor) in served.items():
            try:
                gauges = monitor.gauges(self.drift_summary(name, version, monitor, families))
            except Exception:
                log.exception("drift summary of %s failed", name)
                continue
            for key, value in gauges.items():
                if value is not None and math.isfinite(value):
                    psi.add_metric([name, key.removesuffix("_psi")], float(value))

        class Scrape:
            def collect(self) -> list[Any]:
                return [*families, psi]

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Scrape())
        return generate_latest(registry)

    def close(self) -> None:
        """This worker is leaving: its live gauges stop counting."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
