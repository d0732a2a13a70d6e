"""``dlguide demo``: a short tour of each installed plugin's demos on embedded data."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from dlguide._errors import DlguideError, UsageError, did_you_mean
from dlguide._plugins import Runtime, get_runtime
from dlguide._registry import Entry


@dataclasses.dataclass
class DemoResult:
    task: str
    plugin: str
    status: str
    seconds: float
    headline: str
    run_dir: Path | None


def demo_entries(plugins: Sequence[str], runtime: Runtime) -> list[Entry]:
    """Tasks with a demo, of the named plugins (all plugins when none is named)."""
    entries = [e for e in runtime.registry.entries("task") if e.demo is not None]
    owners = {e.owner for e in entries}
    for name in plugins:
        if name not in owners:
            loaded = sorted({p.name for p in runtime.plugins})
            raise UsageError(f"no demo for plugin {name!r}{did_you_mean(name, loaded)}"
                             + (f" (plugins with demos: {', '.join(sorted(owners))})" if owners else ""))
    return [e for e in entries if not plugins or e.owner in plugins]


def _headline(metrics: dict[str, float]) -> str:
    test = {k: v for k, v in metrics.items() if k.startswith("test/") and k.count("/") == 1 and k != "test/loss"}
    shown = test or {k: v for k, v in metrics.items() if k.count("/") == 1}
    return ", ".join(f"{k} {v:.4f}" for k, v in list(shown.items())[:3])


def run_demos(plugins: Sequence[str] = (), *, out: str | Path = "runs/demo", runtime: Runtime | None = None,
              progress: str = "auto") -> list[DemoResult]:
    """Run every demo, continuing past failures; each run goes to ``out/<task>/<time>``."""
    from dlguide._runs import run_task

    rt = runtime or get_runtime()
    entries = demo_entries(plugins, rt)
    if not entries:
        raise UsageError("no installed plugin has a demo; install one, e.g. pip install dlguide-vision")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = []
    for entry in entries:
        started = time.perf_counter()
        target = Path(out) / entry.name / stamp
        try:
            res = run_task(entry.name, base=entry.demo, out=target, runtime=rt, progress=progress)
            results.append(DemoResult(entry.name, entry.owner, "ok", time.perf_counter() - started,
                                      _headline(res.metrics), res.run_dir))
        except DlguideError as exc:
            results.append(DemoResult(entry.name, entry.owner, f"failed: {exc}", time.perf_counter() - started,
                                      "", target if target.exists() else None))
    return results


def format_results(results: Sequence[DemoResult]) -> str:
    header = ("task", "status", "time", "result", "run directory")
    rows = [(r.task, r.status if r.status == "ok" else "FAILED", f"{r.seconds:.0f}s", r.headline,
             str(r.run_dir or "-")) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    out += [f"{r.task}: {r.status}" for r in results if r.status != "ok"]
    return "\n".join(out)
