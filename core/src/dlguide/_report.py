"""``dlguide report``: runs, studies and cross-validations as one HTML file a person opens.

    dlguide report runs/sine-a runs/sine-b runs/sine-tune runs/sine-cv --out report.html --title "Sine"

Each input is a run directory (``config.yaml``), a study folder of ``dlguide tune``
(``study.json`` beside ``trial_*`` runs) or a cv folder of ``dlguide cv`` (``cv.json`` beside
``fold_*`` runs). A run shows its task, final metrics, learning curves, the pictures it wrote
and its config; a study its trials and its best trial's run; a cv folder the mean, spread and
95% interval of each metric. Several runs of one task are also compared side by side, with
``dlguide compare``'s verdicts when each saved its per-sample outcomes.

The file stands alone: pictures are embedded as data: URIs, the style is inline, there is no
script and no external URL. Reading runs needs yaml and json only (no torch); matplotlib draws
the learning curves of a run that has none yet, and the comparison's statistics import what
``dlguide compare`` needs. Everything read from the runs is escaped (``_report_html``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dlguide import __version__
from dlguide._errors import DlguideError, UsageError, first_line
from dlguide._report_html import (Html, Section, draw_curves, flatten, gallery, heading, is_png, join, link,
                                  metrics_table, note, number, page, paragraph, picture, pictures_html, table)

MAX_PICTURES = 24  # per run or study: a GAN's per-epoch samples are thinned to this many
SKIPPED_FOLDERS = ("checkpoints", "tensorboard")  # checkpoints and event files hold no pictures to show
KINDS = {"config.yaml": "run", "study.json": "study", "cv.json": "cv"}


# -- the command -------------------------------------------------------------------------------------
def add_report_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dlguide report`` to the CLI's subcommands."""
    p = subparsers.add_parser("report", help="write runs, studies and cv folders as one self-contained HTML file",
                              description="One HTML file (pictures embedded, no script, no external URL) showing "
                              "each run's config, metrics, learning curves and pictures, each study's trials and "
                              "each cv folder's summary; runs of one task are compared side by side.")
    p.add_argument("paths", metavar="RUN|STUDY|CV_DIR", nargs="+",
                   help="run directories, study folders (dlguide tune) or cv folders (dlguide cv)")
    p.add_argument("--out", metavar="FILE", required=True, help="the HTML file to write")
    p.add_argument("--title", metavar="TEXT", help="the page's title (default: 'dlguide report')")
    p.set_defaults(handler=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.paths, args.out, title=args.title)
    print(f"wrote {path}")
    return 0


def write_report(paths: Sequence[str | Path], out: str | Path, *, title: str | None = None) -> Path:
    """Write the report of ``paths`` to ``out`` (through a temporary file and a rename); returns ``out``."""
    from dlguide._rundir import write_text_atomic

    if not paths:
        raise UsageError("report needs at least one run directory, study folder or cv folder")
    inputs = [(Path(p), classify(p)) for p in paths]  # every input checked before anything is drawn
    target = Path(out)
    if target.is_dir():
        raise UsageError(f"--out {target} is a folder; expected the HTML file to write, e.g. {target / 'report.html'}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder of --out {target}: {exc.strerror or exc}") from None
    text = build_report(inputs, title or "dlguide report")
    try:
        write_text_atomic(target, text)
    except OSError as exc:
        raise UsageError(f"cannot write --out {target}: {exc.strerror or exc}") from None
    return target


def classify(path: str | Path) -> str:
    """``run``, ``study`` or ``cv``; a usage error for anything else."""
    folder = Path(path)
    expected = "expected a run directory (config.yaml), a study folder (study.json) or a cv folder (cv.json)"
    if not folder.exists():
        raise UsageError(f"{folder} not found; {expected}")
    if not folder.is_dir():
        raise UsageError(f"{folder} is a file; {expected}")
    if (folder / "manifest.json").is_file():
        raise UsageError(f"{folder} is an export bundle; {expected}")
    for name, kind in KINDS.items():
        if (folder / name).is_file():
            return kind
    for prefix, kind in (("trial_", "study"), ("fold_", "cv")):  # a study or cv still running: no summary yet
        if any((p / "config.yaml").is_file() for p in folder.glob(f"{prefix}*")):
            return kind
    raise UsageError(f"{folder} holds none of config.yaml, study.json, cv.json; {expected}")


def build_report(inputs: Sequence[tuple[Path, str]], title: str) -> str:
    """The page: one section per input, then a comparison of each task's runs given together."""
    anchors = Anchors()
    seen: set[Path] = set()
    sections: list[Section] = []
    runs: list[tuple[str, Path, dict[str, Any]]] = []
    for path, kind in inputs:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if kind == "run":
            section, config = run_section(path, str(path), anchors)
            runs.append((str(path), path, config))
            sections.append(section)
        else:
            sections.append((study_section if kind == "study" else cv_section)(path, anchors))
    by_task: dict[str, list[tuple[str, Path]]] = {}
    for label, path, config in runs:
        by_task.setdefault(str(config.get("task", "?")), []).append((label, path))
    for task, group in by_task.items():
        if len(group) > 1:
            sections.append(comparison_section(task, group, anchors))
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return page(title, f"written by dlguide {__version__} on {stamp}", sections)


class Anchors:
    """Unique ids for sections (never taken from file names: they are untrusted)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"s{self.count}"


# -- reading what runs wrote (tolerant: a report shows what is there and says what is not) ----------
def read_json(path: Path) -> tuple[Any, str | None]:
    """(value, None), or (None, why it cannot be read); (None, None) when the file is absent."""
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} cannot be read ({first_line(exc, 120)})"


def read_config(run: Path) -> tuple[dict[str, Any], str | None]:
    import yaml  # here, not at import: building the CLI's parser imports this module

    try:
        data = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return {}, f"config.yaml cannot be read ({first_line(exc, 120)})"
    if not isinstance(data, dict):
        return {}, f"config.yaml holds a {type(data).__name__}, not the run's settings"
    return data, None


def read_epochs(run: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl that parse (a row cut short by a crash is skipped)."""
    try:
        text = (run / "metrics.jsonl").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def is_count(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def nested_runs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and (p / "config.yaml").is_file())


def find_pictures(run: Path, skip: Sequence[str] = ("learning_curves.png",)) -> tuple[list[Path], int]:
    """Every PNG the run wrote, its own folder first, then its subfolders (nested runs, hidden
    folders, checkpoints and symlinks aside), thinned to ``MAX_PICTURES``; and how many there are."""
    groups: dict[str, list[Path]] = {}
    for folder, dirs, files in os.walk(run):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_FOLDERS
                         and not (here / d / "config.yaml").is_file())
        pngs = sorted(here / f for f in files if f.lower().endswith(".png") and not f.startswith("."))
        if here == run:
            pngs = [p for p in pngs if p.name not in skip]
        if pngs:
            groups[str(here.relative_to(run))] = pngs
    total = sum(map(len, groups.values()))
    chosen = groups.pop(".", [])[:MAX_PICTURES]
    left = MAX_PICTURES - len(chosen)
    for i, files in enumerate(groups.values()):
        share = spread(files, left // (len(groups) - i))  # what a folder leaves unused goes to the next
        chosen += share
        left -= len(share)
    return chosen, total


def spread(items: list[Path], k: int) -> list[Path]:
    """``k`` of ``items`` evenly spaced, first and last included (a GAN's first and last epochs)."""
    n = len(items)
    if n <= k:
        return items
    if k <= 1:
        return items[-1:] if k == 1 else []
    return [items[round(i * (n - 1) / (k - 1))] for i in range(k)]


def summary_missing(path: Path, prefix: str) -> str:
    if path.is_file():
        return f"{path.name} holds no summary"
    done = sum((p / "metrics.json").is_file() for p in path.parent.glob(f"{prefix}*"))
    return f"no {path.name} yet (still running?); {done} {prefix}* runs have finished"


# -- a run ------------------------------------------------------------------------------------------
def run_section(run: Path, label: str, anchors: Anchors) -> tuple[Section, dict[str, Any]]:
    """A run's section (with its nested runs as subsections) and its config."""
    anchor = anchors()
    config, config_error = read_config(run)
    task = config.get("task")
    final, final_error = read_json(run / "metrics.json")
    epochs = read_epochs(run)
    finished = isinstance(final, dict)
    trained = max((int(r["epoch"]) for r in epochs if is_count(r.get("epoch"))), default=0)
    facts = [f"task {task}" if isinstance(task, str) else "task unknown", f"folder {run}"]
    if finished and is_count(final.get("best_epoch")):
        planned = config.get("epochs")
        of = f" ({planned} planned)" if isinstance(planned, int) and trained and planned != trained else ""
        facts.append(f"best epoch {int(final['best_epoch'])} of {trained or planned}{of}")
    elif not finished:
        facts.append(f"unfinished: {trained} epoch{'s' if trained != 1 else ''} logged, no metrics.json yet")
    parts: list[str] = [paragraph(" · ".join(facts), "meta")]
    for error in (config_error, final_error):
        if error:
            parts.append(note(error, warn=True))

    parts.append(heading(4, "Final metrics" if finished else "Metrics"))
    parts.append(metrics_table(final) if finished else note("the run has not finished: no final metrics yet"))
    evaluated, eval_error = read_json(run / "eval.json")
    if isinstance(evaluated, dict) or eval_error:
        parts += [heading(4, "eval.json (recomputed by dlguide eval)"),
                  metrics_table(evaluated) if isinstance(evaluated, dict) else note(eval_error, warn=True)]

    parts.append(heading(4, "Learning curves"))
    curves = is_png(run / "learning_curves.png")
    if curves is not None:
        parts.append(gallery([picture(curves, "learning_curves.png")], wide=True))
    elif epochs:
        parts.append(gallery([picture(draw_curves(epochs, str(task or "")), "drawn from metrics.jsonl")], wide=True))
    else:
        parts.append(note("no epoch finished yet (no metrics.jsonl rows)"))

    found, total = find_pictures(run)
    if found:
        parts += [heading(4, "Pictures"), pictures_html(run, found, total)]

    children = [run_section(child, child.name, anchors)[0] for child in nested_runs(run)]
    if children:
        parts += [heading(4, "Runs inside this run"),
                  Html(f"<ul>{''.join(f'<li>{link(c.anchor, c.title)}</li>' for c in children)}</ul>")]
    parts += [heading(4, "Config"), table(("key", "value"), flatten(config), scroll=True)]
    section = Section(anchor, label, join(parts), kind="run", badge="" if finished else "unfinished",
                      children=children)
    return section, config


# -- several runs of one task ------------------------------------------------------------------------
def comparison_section(task: str, runs: list[tuple[str, Path]], anchors: Anchors) -> Section:
    """Final metrics side by side, then ``dlguide compare``'s verdicts when every run saved outcomes."""
    finals = {label: read_json(path / "metrics.json")[0] for label, path in runs}
    finals = {label: m if isinstance(m, dict) else {} for label, m in finals.items()}
    keys: list[str] = []
    for metrics in finals.values():
        keys += [k for k in metrics if k not in keys]
    rows = [[key, *(finals[label].get(key) for label, _ in runs)] for key in keys]
    parts: list[str] = [heading(4, "Final metrics"),
                        table(["metric", *(label for label, _ in runs)], rows, scroll=len(rows) > 20)]
    parts.append(heading(4, "Are they different? (dlguide compare)"))
    if all((path / "outcomes.safetensors").is_file() for _, path in runs):
        parts.append(verdicts(runs))
    else:
        lacking = ", ".join(label for label, path in runs if not (path / "outcomes.safetensors").is_file())
        parts.append(note(f"not tested: no per-sample outcomes (outcomes.safetensors) in {lacking}"))
    return Section(anchors(), task, join(parts), kind="comparison")


def verdicts(runs: list[tuple[str, Path]], alpha: float = 0.05) -> Html:
    try:
        from dlguide._compare import compare_runs

        results = compare_runs([str(path) for _, path in runs])
    except (DlguideError, ImportError) as exc:
        return note(f"not compared: {first_line(exc)}", warn=True)
    labels = {str(path): label for label, path in runs}
    adjusted = len(results) > 1
    rows = [[f"{labels.get(r.b, r.b)} vs {labels.get(r.a, r.a)}", r.metric, r.test, r.n, r.mean_a, r.mean_b,
             r.difference, f"{number(r.interval[0])} to {number(r.interval[1])}",
             r.p_adjusted if adjusted else r.p, r.verdict(alpha)] for r in results]
    header = ["B vs A", "per-sample", "test", "n", "mean A", "mean B", "B - A", "95% interval",
              "Holm-adjusted p" if adjusted else "p", "verdict"]
    return table(header, rows)


# -- a study of dlguide tune ---------------------------------------------------------------------------
def study_section(folder: Path, anchors: Anchors) -> Section:
    """The trials (best first), the best trial's settings, the study's pictures and its best run."""
    anchor = anchors()
    study, error = read_json(folder / "study.json")
    study = study if isinstance(study, dict) else {}
    metric = study.get("metric") or study.get("monitor") or "value"
    direction = str(study.get("direction", "minimize"))
    trials = study.get("trials") if isinstance(study.get("trials"), list) else study.get("trial_rows")
    trials = [t for t in trials if isinstance(t, dict)] if isinstance(trials, list) else []
    best = study.get("best") if isinstance(study.get("best"), dict) else {}
    facts = [f"{k} {study[k]}" for k in ("task", "direction", "sampler", "pruner") if study.get(k) is not None]
    parts: list[str] = [paragraph(" · ".join([*facts, f"metric {metric}", f"folder {folder}"]), "meta")]
    if error or not study:
        parts.append(note(error or summary_missing(folder / "study.json", "trial_"), warn=True))

    parts.append(heading(4, "Best trial"))
    if best:
        params = best.get("params") if isinstance(best.get("params"), dict) else {}
        parts.append(paragraph(f"trial {best.get('number', '?')}: {metric} = {number(best.get('value'))}"))
        parts.append(table(("parameter", "value"), flatten(params)) if params else note("no parameters"))
    else:
        parts.append(note("no trial has completed yet"))

    def order(trial: dict[str, Any]) -> tuple[bool, float, float]:
        value, n = trial.get("value"), trial.get("number")
        n = float(n) if isinstance(n, (int, float)) else math.inf
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return True, 0.0, n  # pruned, failed and running trials after the complete ones
        return False, -value if direction == "maximize" else value, n

    trials.sort(key=order)
    names: list[str] = []
    for trial in trials:
        params = trial.get("params") if isinstance(trial.get("params"), dict) else {}
        names += [k for k in params if k not in names]
    errors = any(t.get("error") for t in trials)
    rows = [[t.get("number"), t.get("state"), t.get("value"), t.get("epochs"),
             *((t.get("params") or {}).get(k) if isinstance(t.get("params"), dict) else None for k in names),
             *([t.get("error")] if errors else [])] for t in trials]
    marked = [i for i, t in enumerate(trials) if best and t.get("number") == best.get("number")]
    parts += [heading(4, f"Trials ({len(trials)}, best first)"),
              table(["trial", "state", metric, "epochs", *names, *(["error"] if errors else [])], rows,
                    highlight=marked, scroll=len(rows) > 20) if trials else note("no trials recorded")]

    pngs = sorted(p for p in folder.glob("*.png") if not p.name.startswith("."))
    if pngs:
        parts += [heading(4, "Pictures"), pictures_html(folder, pngs[:MAX_PICTURES], len(pngs), wide=True)]
    children = []
    run = best_run(folder, best)
    if run is not None:
        section = run_section(run, f"best trial: {run.name}", anchors)[0]
        children.append(section)
    elif best:
        parts.append(note(f"the best trial's run directory is not in {folder}"))
    return Section(anchor, str(folder), join(parts), kind="study", children=children)


def best_run(folder: Path, best: dict[str, Any]) -> Path | None:
    """The best trial's run directory, looked for inside the study folder only (study.json's
    paths are not followed elsewhere)."""
    names = [Path(str(best["run_dir"])).name] if best.get("run_dir") else []
    if isinstance(best.get("number"), int):
        names += [f"trial_{best['number']:04d}", f"trial_{best['number']}"]
    for name in names:
        if name not in ("", ".", "..") and (folder / name / "config.yaml").is_file():
            return folder / name
    return None


# -- a cross-validation of dlguide cv ------------------------------------------------------------------
def cv_section(folder: Path, anchors: Anchors) -> Section:
    """Mean, standard deviation and 95% interval per metric, then each fold's figures."""
    anchor = anchors()
    data, error = read_json(folder / "cv.json")
    data = data if isinstance(data, dict) else {}
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    metrics = {str(k): v for k, v in metrics.items() if isinstance(v, dict)}
    facts = [f"{k} {data[k]}" for k in ("task", "folds", "repeats") if data.get(k) is not None]
    parts: list[str] = [paragraph(" · ".join([*facts, f"folder {folder}"]), "meta")]
    if error or not data:
        parts.append(note(error or summary_missing(folder / "cv.json", "fold_"), warn=True))

    def interval(summary: dict[str, Any]) -> str:
        ci = summary.get("ci95")
        return f"{number(ci[0])} to {number(ci[1])}" if isinstance(ci, list) and len(ci) == 2 else ""

    def values(summary: dict[str, Any]) -> list[Any]:
        return summary.get("values") if isinstance(summary.get("values"), list) else []

    rows = [[name, s.get("mean"), s.get("std"), interval(s), len(values(s))] for name, s in metrics.items()]
    parts += [heading(4, "Metrics over the folds"),
              table(("metric", "mean", "std", "95% interval", "folds"), rows) if rows else note("no metrics")]
    count = max((len(values(s)) for s in metrics.values()), default=0)
    if count:
        folds = sorted((p.name for p in folder.glob("fold_*") if p.is_dir()),
                       key=lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)])  # 2 before 10
        labels = folds if len(folds) == count else [str(i + 1) for i in range(count)]
        per_fold = [[labels[i], *(values(s)[i] if i < len(values(s)) else None for s in metrics.values())]
                    for i in range(count)]
        parts += [heading(4, "Per fold"), table(["fold", *metrics], per_fold, scroll=count > 20)]
    return Section(anchor, str(folder), join(parts), kind="cv")
