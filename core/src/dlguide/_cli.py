"""The ``dlguide`` command line: a thin layer over library functions tests call directly.

Usage errors print one line and exit 2; other failures print one line and exit 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from dlguide import __version__
from dlguide._errors import DlguideError, UsageError
from dlguide._plugins import Runtime, add_commands, get_runtime


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that names each option's default, unless it is empty or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        # --help and --version have the default SUPPRESS; positionals have no option strings
        if not text or "default" in text or default in (None, False, [], argparse.SUPPRESS) \
                or not action.option_strings:
            return action.help
        return f"{text} (default: {default})"


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line that says where to look."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    #: the top level's commands by name (``build_parser``)
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _progress(args: argparse.Namespace) -> str:
    return "none" if args.quiet else "auto"


def cmd_plugins(args: argparse.Namespace) -> int:
    rt: Runtime = args.runtime
    if args.hooks:  # hook -> the plugins that implement it, every hook of the specs listed
        from dlguide import hookspecs

        names = sorted(n for n in dir(hookspecs) if n.startswith("dlguide_"))
        table = {n: [p.name for p in rt.plugins if n in p.hooks] for n in names}
        if args.json:
            print(json.dumps(table, indent=2))
            return 0
        width = max(len(n) for n in names)
        for name, plugins in table.items():
            print(f"{name.ljust(width)}  {', '.join(plugins) or '-'}")
        return 0
    if args.json:
        print(json.dumps([p.as_dict() for p in rt.plugins], indent=2))
        return 0
    if not rt.plugins:
        print("no plugins installed (pip install dlguide-vision, dlguide-nlp, dlguide-recsys or dlguide-medical)")
        return 0
    rows = [(p.name, p.distribution, p.version, p.status, ", ".join(h.removeprefix("dlguide_") for h in p.hooks))
            for p in rt.plugins]
    header = ("name", "distribution", "version", "status", "hooks")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rt: Runtime = args.runtime
    entries = list(rt.registry.entries(args.kind))
    if args.json:
        print(json.dumps([{"kind": e.kind, "name": e.name, "summary": e.summary, "plugin": e.owner,
                           "target": e.target, "demo": e.demo is not None} for e in entries], indent=2))
        return 0
    if not entries:
        print("nothing registered; see 'dlguide plugins'")
        return 0
    width = max(len(e.name) for e in entries)
    kind = None
    for e in entries:
        if e.kind != kind:
            print(f"{e.kind}s:" if kind is None else f"\n{e.kind}s:")
            kind = e.kind
        print(f"  {e.name.ljust(width)}  {e.summary}  [{e.owner}]")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    rt: Runtime = args.runtime
    from dlguide._config import describe
    from dlguide._runs import task_class

    entry = rt.registry.get("task", args.task) if args.task in rt.registry.names("task") else None
    # a config class registered in a torch-free module answers without importing the task (and torch)
    config = entry.load_config() if entry is not None and entry.config else task_class(args.task, rt).Config
    entry = entry or rt.registry.get("task", args.task)
    fields = describe(config)
    if args.json:
        keys = [{"key": f.key, "type": f.type, "default": f.default, "help": f.help,
                 "choices": list(rt.registry.choices(f.registry, args.task) if f.registry else f.choices or [])}
                for f in fields]
        print(json.dumps({"task": entry.name, "summary": entry.summary, "plugin": entry.owner,
                          "keys": keys, "demo": dict(entry.demo or {})}, indent=2, default=str))
        return 0
    print(f"{entry.name}: {entry.summary}  [{entry.owner}]\n")
    kw = max(len(f.key) for f in fields)
    tw = max(len(f.type) for f in fields)
    dw = max(len(repr(f.default)) for f in fields)
    print(f"{'key'.ljust(kw)}  {'type'.ljust(tw)}  {'default'.ljust(dw)}  help")
    for f in fields:
        choices = f.choices
        if f.registry is not None:  # what the installed plugins registered for this task
            choices = tuple(rt.registry.choices(f.registry, args.task))
        listed = choices and all(str(c) in f.help for c in choices) and f.registry is None
        extra = f" (one of {', '.join(map(str, choices))})" if choices and not listed else ""
        print(f"{f.key.ljust(kw)}  {f.type.ljust(tw)}  {repr(f.default).ljust(dw)}  {f.help}{extra}")
    if entry.demo:
        print(f"\ndemo settings: {', '.join(f'{k}={v}' for k, v in entry.demo.items())}")
    return 0


def _positional(args: argparse.Namespace, key: str, metavar: str) -> None:
    """``run --set k=v TASK``: ``--set`` takes every word after it, so a positional written after
    its values lands among them; a word without ``=`` there is taken back as the positional."""
    if getattr(args, key) is None:
        words = [w for w in args.set if "=" not in w]
        if len(words) != 1:
            raise UsageError(f"the following arguments are required: {metavar} (see 'dlguide {args.command} --help')")
        setattr(args, key, words[0])
        args.set = [w for w in args.set if w != words[0]]


def cmd_run(args: argparse.Namespace) -> int:
    rt: Runtime = args.runtime
    _positional(args, "task", "TASK")
    from dlguide._launch import launch, wants_launch
    from dlguide._rundir import RunDir
    from dlguide._runs import build_task, resume_run, run_task
    from dlguide._strategy import check_distributed

    if wants_launch(args):  # the config's usage errors are said once, before any worker starts
        task = build_task(args.task, config_file=args.config, overrides=args.set, runtime=rt)
        check_distributed(task.config, args.nproc_per_node * args.nnodes)
        return launch(args, args.argv)
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and args.out and RunDir(args.out).config_path.is_file():
        # torchrun restarted the workers (--max-restarts) after one failed: continue the same
        # run from its last checkpoint, or start it again when it never wrote one
        resume_run(args.out, overrides=args.set, runtime=rt, progress=_progress(args))
        return 0
    run_task(args.task, config_file=args.config, overrides=args.set, out=args.out, runtime=rt,
             progress=_progress(args))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    rt: Runtime = args.runtime
    _positional(args, "run_dir", "RUN_DIR")
    from dlguide._launch import launch, wants_launch
    from dlguide._rundir import RunDir
    from dlguide._runs import build_task, resume_run
    from dlguide._strategy import check_distributed

    if wants_launch(args):
        name, saved = RunDir.existing(args.run_dir).read_config()
        task = build_task(name, base=saved, overrides=args.set, runtime=rt)
        check_distributed(task.config, args.nproc_per_node * args.nnodes)
        return launch(args, args.argv)
    resume_run(args.run_dir, overrides=args.set, runtime=rt, progress=_progress(args))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    rt: Runtime = args.runtime
    from dlguide._callbacks import format_table
    from dlguide._runs import evaluate_run

    metrics = evaluate_run(args.run_dir, split=args.split, runtime=rt)
    print(json.dumps(metrics, indent=2) if args.json else format_table(metrics))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    rt: Runtime = args.runtime
    from dlguide._runs import predict_run, read_input_file

    inputs = list(args.inputs) + (read_input_file(args.file) if args.file else [])
    task, rows = predict_run(args.run_dir, inputs, out=args.out, runtime=rt)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(task.format_prediction(row))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dlguide._export import export_run, verify_bundle

    if args.paths[0] == "verify":
        if len(args.paths) != 2 or args.out:
            raise UsageError("usage: dlguide export verify BUNDLE")
        checks = verify_bundle(args.paths[1], registry_runtime=args.runtime)
        for check in checks:
            verdict = "ok" if check.ok else "FAILED"
            note = f" ({check.note})" if check.note else ""
            print(f"{check.runtime:<30} max |diff| {check.max_abs_diff:.3g}  (tolerance {check.tolerance:g})  "
                  f"{verdict}{note}")
        return 0 if all(c.ok for c in checks) else 1
    if len(args.paths) != 1 or not args.out:
        raise UsageError("usage: dlguide export RUN_DIR --out BUNDLE [--format safetensors,onnx,pt2] "
                         "(or: dlguide export verify BUNDLE)")
    result = export_run(args.paths[0], args.out, args.format, runtime=args.runtime)
    for note in result.notes:
        print(f"dlguide: note: {note}", file=sys.stderr)
    formats = ", ".join(f"{fmt} ({file})" for fmt, file in result.manifest["formats"].items())
    print(f"exported {result.manifest['task']} version {result.manifest['version']} to {result.path}: {formats}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dlguide._compare import compare_runs

    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, not {args.alpha}")
    results = compare_runs(args.runs, metric=args.metric, seed=args.seed)
    if args.json:
        print(json.dumps([{**dataclasses.asdict(r), "verdict": r.verdict(args.alpha)} for r in results], indent=2))
        return 0
    for result in results:
        print(result.line(args.alpha, adjusted=len(results) > 1))
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from dlguide._cv import format_cv, run_cv

    result = run_cv(args.task, args.folds, repeats=args.repeats, out=args.out, overrides=args.set,
                    config_file=args.config, runtime=args.runtime, progress=_progress(args))
    print(json.dumps(result, indent=2) if args.json else format_cv(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    rt: Runtime = args.runtime
    from dlguide._demo import format_results, run_demos

    results = run_demos(args.plugins, out=args.out, runtime=rt, progress=_progress(args))
    print("\n" + format_results(results))
    finished = [r.run_dir for r in results if r.run_dir is not None and (r.run_dir / "metrics.json").is_file()]
    if finished:  # one page with every demo's figures and pictures
        from dlguide._report import write_report

        page = write_report(finished, Path(args.out) / "report.html", title="dlguide demo")
        pictures = sum(1 for run in finished for _ in run.rglob("*.png"))
        print(f"\n{pictures} pictures in the run directories above; all of them on one page: {page}")
    return 0 if all(r.status == "ok" for r in results) else 1


#: commands whose options may come anywhere among their positionals (``predict RUN --json a b``)
INTERMIXED = frozenset({"predict"})


def build_parser(rt: Runtime) -> Parser:
    parser = Parser(prog="dlguide", description="dlguide: deep-learning applications from one core and plugins.")
    parser.add_argument("--version", action="version", version=f"dlguide {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parser.commands = sub.choices

    p = sub.add_parser("plugins", help="list installed plugins, their hooks and status")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--hooks", action="store_true", help="list each hook with the plugins that implement it")
    p.set_defaults(handler=cmd_plugins)

    p = sub.add_parser("list", help="list registered tasks, models and datasets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--kind", choices=("task", "model", "dataset"), help="only this kind")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("info", help="show a task's config keys with type, default and help")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_info)

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                       help="override a config key (dotted for nested keys); repeatable")
        p.add_argument("--quiet", action="store_true", help="no progress bar, logs or final table")
        from dlguide._launch import add_launch_options

        add_launch_options(p)

    p = sub.add_parser("run", help="train and evaluate a task into a run directory")
    p.add_argument("task", metavar="TASK", nargs="?")  # or the word after --set values (see _positional)
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of config keys")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<task>/<time>)")
    run_options(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted run, or extend a finished one")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?")
    run_options(p)
    p.set_defaults(handler=cmd_resume)

    p = sub.add_parser("eval", help="evaluate a finished run's weights again")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", choices=("test", "val"), default="test", help="the split to evaluate")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("predict", help="predict with a finished run",
                       epilog="Options may come anywhere on the line; inputs that look like options "
                       "('-x', a text starting with '-') go after '--'.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("inputs", metavar="INPUT", nargs="*", help="image paths, texts or values, as the task reads them")
    p.add_argument("--file", metavar="FILE", help="also read inputs from this UTF-8 file, one per line")
    p.add_argument("--out", metavar="DIR", help="folder for tasks whose predictions are files "
                   "(default RUN_DIR/predictions)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("export", help="write a finished run as a bundle (safetensors, ONNX, torch.export), "
                       "or check one: export verify BUNDLE")
    p.add_argument("paths", metavar="RUN_DIR", nargs="+", help="the run to export (or: verify BUNDLE)")
    p.add_argument("--out", metavar="BUNDLE", help="the new bundle folder")
    p.add_argument("--format", default="safetensors,onnx,pt2", help="comma-separated: safetensors, onnx, pt2 "
                   "(default all)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("cv", help="K-fold cross-validation: one run per fold, then each metric's mean, std "
                       "and 95%% interval")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--folds", type=int, required=True, help="folds of the pooled train and validation samples")
    p.add_argument("--repeats", type=int, default=1, help="repeat with seeds seed, seed+1, ... (default 1)")
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of config keys")
    p.add_argument("--out", metavar="DIR", help="folder of the fold runs and cv.json (default runs/cv/<task>)")
    p.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="override a config key for every fold")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print cv.json")
    p.set_defaults(handler=cmd_cv)

    p = sub.add_parser("compare", help="test whether runs differ, sample by sample on the same test split "
                       "(or cross-validations, fold by fold)")
    p.add_argument("runs", metavar="RUN_DIR", nargs="+", help="two or more finished runs of one task, or cv folders")
    p.add_argument("--metric", help="the per-sample outcome to compare (default: correct, else the first "
                   "figure that is not a loss)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdict (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("demo", help="a short tour of each installed plugin's demo on embedded data")
    p.add_argument("plugins", metavar="PLUGIN", nargs="*", help="only these plugins")
    p.add_argument("--out", metavar="DIR", default="runs/demo", help="where the demo runs go")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("plugin", help="for plugin authors: new (a package from the template), update (pull "
                       "template changes), check (the conformance suite)")
    plugin_sub = p.add_subparsers(dest="plugin_command", metavar="ACTION", parser_class=Parser, required=True)
    from dlguide._conformance import add_check_command
    from dlguide._scaffold import add_scaffold_commands

    add_scaffold_commands(plugin_sub)
    add_check_command(plugin_sub)

    from dlguide._lrfind import add_lr_find_command
    from dlguide._report import add_report_command
    from dlguide._serve import add_serve_command
    from dlguide._tune import add_tune_command

    add_serve_command(sub)  # these import nothing heavy until they run
    add_report_command(sub)
    add_tune_command(sub)
    add_lr_find_command(sub)
    add_commands(rt, sub)  # each plugin's on its own: one that fails is reported and skipped
    return parser


def parse(parser: Parser, argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed; a command of ``INTERMIXED`` parses its own words again with options and
    positionals intermixed: argparse ends a list of positionals at the first option, so that
    ``predict RUN --json a b`` would leave ``a b`` unrecognized. Unknown options stay usage errors."""
    args, extras = parser.parse_known_args(argv)
    if args.command in INTERMIXED:
        # the top level takes flags only (--debug), so the first word that is not one is the command
        at = next(i for i, word in enumerate(argv) if not word.startswith("-"))
        mixed = parser.commands[args.command].parse_intermixed_args(argv[at + 1:])
        vars(args).update(vars(mixed))  # a fresh parse: options that accumulate are not counted twice
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _print_error(exc: BaseException) -> None:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"dlguide: error: {message}", file=sys.stderr)


def _reported_elsewhere(exc: BaseException) -> bool:
    """An interrupt of a distributed run is told once: by the launcher, or else by the first process."""
    from dlguide._errors import RunInterrupted

    if not isinstance(exc, RunInterrupted) or "LOCAL_RANK" not in os.environ:
        return False
    return os.environ.get("DLGUIDE_LAUNCHED") == "1" or os.environ.get("RANK", "0") != "0"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dlguide`` and ``python -m dlguide``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        rt = get_runtime()
        parser = build_parser(rt)
        args = parse(parser, argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command != "plugins":
            for info in rt.plugins:
                if info.status not in ("ok", "disabled"):
                    print(f"dlguide: warning: plugin {info.name!r} did not load ({info.status}); "
                          "see 'dlguide plugins'", file=sys.stderr)
        args.runtime = rt  # handlers, plugin commands included, reach the registry through it
        args.argv = argv
        handler: Any = args.handler
        return int(handler(args) or 0)
    except DlguideError as exc:
        if debug:
            raise
        if not _reported_elsewhere(exc):
            _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dlguide: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader (head, less) went away: not an error of ours
        sys.stderr.close()
        return 0
    except Exception as exc:
        if debug:
            raise
        print(f"dlguide: error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
              " (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
