"""Export bundles: a finished run as a folder that loads and serves without its training data.

    BUNDLE/
      manifest.json          task, plugin and versions, the network's inputs and outputs, the
                             run's test metrics, a sha256 per file, reference inputs with their
                             results, and the reference statistics of the drift monitor
      config.yaml task.json  the run's config and the facts decode/encode need
      model.safetensors      the weights (the ``torch`` runtime: eager PyTorch)
      model.onnx             the network for ONNX Runtime (``--runtime onnx``)
      model.pt2              the network as a ``torch.export`` program
      reference.safetensors  the network's reference inputs and eager outputs (``export verify``)
      reference/             reference input files (file tasks)
      ...                    the task's ``inference_files`` (a tokenizer, an id map)

The network is the module the task's ``predict_step`` calls (``Task.export_module``); it is
traced on the reference inputs by running them through the task's own inference path, so
decode, collate and encode stay Python around it and any task that predicts also exports.
Loading checks every file against the manifest first and unpickles nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlguide._errors import UsageError, first_line
from dlguide._inference import RawInput, decode_inputs, encode_outputs, predict_samples, to_json
from dlguide._rundir import _UMASK, RunDir, write_text_atomic

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dlguide._task import Task

log = logging.getLogger("dlguide")

FORMATS = ("safetensors", "onnx", "pt2")
RUNTIMES = ("torch", "onnx")
FORMAT_MODULES = {"onnx": ("onnx", "onnxscript")}
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
REFERENCE_TENSORS = "reference.safetensors"
REFERENCE_FILES = "reference"
#: reference inputs kept in the bundle with their results (and traced for ONNX / torch.export)
KEEP_REFERENCE = 4
#: reference inputs predicted for the drift monitor's statistics
STATISTICS_INPUTS = 256
#: rows of the network's traced batch
TRACE_ROWS = 8
#: how close each format must come to PyTorch eager on the reference inputs (atol = rtol)
TOLERANCE = {"onnx": 1e-4, "pt2": 1e-5}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """``safetensors,onnx`` -> the formats in canonical order; safetensors is always written."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise UsageError(f"unknown export format {bad[0] if bad else text!r}; expected a comma-separated list "
                         f"of {', '.join(FORMATS)}")
    return [f for f in FORMATS if f in names or f == "safetensors"]


# -- the network inside the inference path --------------------------------------------------------
def _resolve(task: Task, dotted: str) -> tuple[Any, str, nn.Module]:
    """(owner, attribute, module) of a task's ``export_module`` path."""
    owner: Any = task
    parts = dotted.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    module = getattr(owner, parts[-1], None)
    if module is None:
        raise UsageError(f"task {task.name!r}: export_module {dotted!r} names no module")
    return owner, parts[-1], module


def network(task: Task) -> nn.Module:
    return _resolve(task, task.export_module)[2]


def replace_network(task: Task, replacement: nn.Module) -> None:
    """Put ``replacement`` where ``predict_step`` finds the network (an exported runtime)."""
    owner, attr, _ = _resolve(task, task.export_module)
    setattr(owner, attr, replacement)
    if task.export_module == "model":
        task.module = replacement


def _flat(value: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    raise UsageError(f"the exported network returned a {type(value).__name__}; expected tensors")


@contextlib.contextmanager
def capture_calls(module: nn.Module, limit: int) -> Iterator[list[tuple[tuple[torch.Tensor, ...], list]]]:
    """Record the positional tensor arguments and outputs of ``module``'s first ``limit`` calls."""
    import torch

    calls: list[tuple[tuple[torch.Tensor, ...], list]] = []

    def hook(_module: nn.Module, args: tuple, output: Any) -> None:
        if len(calls) < limit:
            if not args or not all(isinstance(a, torch.Tensor) for a in args):
                raise UsageError("the exported network is called with arguments that are not tensors; "
                                 "export needs positional tensor arguments")
            calls.append((tuple(a.detach().cpu().clone() for a in args), [t.detach().cpu() for t in _flat(output)]))

    handle = module.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def _trace_batch(calls: list[tuple[tuple[torch.Tensor, ...], list]]) -> tuple[torch.Tensor, ...]:
    """One batch of at least two rows from the recorded calls (a dynamic batch dimension needs
    an example of more than one row)."""
    import torch

    args = tuple(torch.cat([c[0][i] for c in calls])[:TRACE_ROWS] for i in range(len(calls[0][0])))
    if args[0].shape[0] < 2:
        args = tuple(torch.cat([a, a]) for a in args)
    return args


def onnx_network(path: Path) -> nn.Module:
    """An ``nn.Module`` that runs ``model.onnx`` with ONNX Runtime in place of the network."""
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("the onnx runtime needs onnxruntime: pip install 'dlguide-core[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    class _Onnx(torch.nn.Module):
        def forward(self, *args: torch.Tensor) -> Any:
            feeds = {n: a.detach().cpu().contiguous().numpy() for n, a in zip(names, args)}
            outs = [torch.from_numpy(o).to(args[0].device) for o in session.run(None, feeds)]
            return outs[0] if len(outs) == 1 else tuple(outs)

    return _Onnx()


def check_program(path: Path) -> None:
    """Refuse a ``.pt2`` archive that ``torch.export.load`` would unpickle arbitrary objects
    from: weights or constants stored as pickles, or sample inputs that ``weights_only``
    loading refuses (torch falls back to full unpickling for those)."""
    import io
    import zipfile

    import torch

    try:
        with zipfile.ZipFile(path) as archive:
            for entry in archive.namelist():
                if entry.endswith("_config.json") and "/data/" in entry:
                    config = json.loads(archive.read(entry)).get("config", {})
                    if any(meta.get("use_pickle") for meta in config.values()):
                        raise UsageError(f"{path} stores tensors as pickles; refusing to load it")
                elif entry.endswith(".pt") and "/sample_inputs/" in entry:
                    torch.load(io.BytesIO(archive.read(entry)), weights_only=True)
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path} is not a torch.export archive ({first_line(exc)[:120]})") from None
    except UsageError:
        raise
    except Exception as exc:  # weights_only refused the sample inputs
        raise UsageError(f"{path} holds sample inputs that are not plain tensors ({first_line(exc)[:120]}); "
                         "refusing to load it") from None


def load_program(path: Path) -> nn.Module:
    """A saved ``torch.export`` program as a module whose ``eval()``/``train()`` are no-ops (an
    exported graph has its mode fixed at export: eval)."""
    import torch

    check_program(path)
    with warnings_quiet():
        graph = torch.export.load(str(path)).module()

    class _Program(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph = [graph]  # kept out of the module tree: .eval() would reach it

        def forward(self, *args: torch.Tensor) -> Any:
            return self.graph[0](*args)

    return _Program()


# -- writing ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    notes: list[str]


def _versions(task: Task, runtime: Any) -> dict[str, Any]:
    from importlib import metadata

    import torch

    import dlguide

    owner = next((e.owner for e in runtime.registry.entries("task") if e.name == task.name), "")
    plugin = next((p for p in runtime.plugins if p.name == owner), None)
    versions = {"dlguide-core": dlguide.__version__, "torch": torch.__version__.split("+")[0]}
    for dist in ("onnx", "onnxruntime", "safetensors"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {"plugin": {"name": owner, "distribution": plugin.distribution if plugin else "",
                       "version": plugin.version if plugin else ""}, "versions": versions}


def _copy_into(run: RunDir, names: Sequence[str], folder: Path) -> list[str]:
    copied = []
    for rel in names:
        source = (run.path / rel)
        if not source.exists():
            raise UsageError(f"{run.path} lacks {rel}, which its task needs for inference")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=False)
        else:
            shutil.copyfile(source, target)
        copied.append(rel)
    return copied


def _tensor_spec(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    return [{"name": n, "shape": ["batch", *t.shape[1:]], "dtype": str(t.dtype).removeprefix("torch.")}
            for n, t in zip(names, tensors)]


def _names(given: Sequence[str], prefix: str, count: int) -> list[str]:
    names = list(given[:count])
    return names + [f"{prefix}_{i}" for i in range(len(names), count)]


def _write_reference_inputs(raws: Sequence[RawInput], folder: Path) -> list[dict[str, Any]]:
    """The kept reference inputs as the manifest lists them (files copied under ``reference/``)."""
    rows = []
    for i, raw in enumerate(raws):
        if isinstance(raw.value, (bytes, bytearray)) or raw.path is not None:
            name = f"{i}_{Path(raw.name or 'input').name}"
            (folder / REFERENCE_FILES).mkdir(exist_ok=True)
            (folder / REFERENCE_FILES / name).write_bytes(raw.data())
            rows.append({"file": f"{REFERENCE_FILES}/{name}", "name": raw.name})
        else:
            rows.append({"value": to_json(raw.value), "name": raw.name})
    return rows


def read_reference_inputs(bundle: Path, manifest: dict[str, Any]) -> list[RawInput]:
    rows = manifest.get("reference", {}).get("inputs", [])
    return [RawInput(value=(bundle / r["file"]).read_bytes(), name=r.get("name", "")) if "file" in r
            else RawInput(value=r["value"], name=r.get("name", "")) for r in rows]


def _strip_paths(result: Any) -> Any:
    """A result as kept in the manifest: local file paths (of a temporary folder) cut to their names."""
    if isinstance(result, dict):
        return {k: (Path(v).name if isinstance(v, str) and os.sep in v else _strip_paths(v)) for k, v in result.items()}
    if isinstance(result, list):
        return [_strip_paths(v) for v in result]
    return result


def export_run(run_path: str | Path, out: str | Path, formats: str | Sequence[str] = FORMATS, *,
               runtime: Any = None) -> ExportResult:
    """Write ``run_path``'s finished run as a bundle at ``out`` (a new folder, written whole or not at all)."""
    import torch
    from safetensors.torch import save_file

    from dlguide._monitor import describe_all, reference_statistics
    from dlguide._plugins import get_runtime
    from dlguide._runs import build_task, load_run

    rt = runtime or get_runtime()
    wanted = parse_formats(formats)
    run = RunDir.existing(run_path)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} already exists and is not empty; export into a new folder")
    task = load_run(run.path, runtime=rt, device="cpu")
    name, saved = run.read_config()
    notes: list[str] = []
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        files = ["config.yaml", "task.json", "model.safetensors"] if run.meta_path.is_file() else \
            ["config.yaml", "model.safetensors"]
        _copy_into(run, files, work)
        inference = _copy_into(run, list(task.inference_files()), work)

        # reference inputs from the test split, predicted eagerly with the network's calls recorded
        raws: list[RawInput] = []
        try:
            with warnings_quiet():  # the data's own notes (texts cut, files skipped) were read at training
                if task.reference_from_data:
                    data_task = build_task(name, base=saved, runtime=rt)
                    raws = list(data_task.reference_inputs(data_task.build_data(), STATISTICS_INPUTS))
                else:
                    raws = list(task.reference_inputs(None, STATISTICS_INPUTS))
        except NotImplementedError as exc:
            notes.append(f"no reference inputs ({first_line(exc)}): the bundle holds weights only; "
                         "verify, ONNX, pt2 and drift statistics need Task.reference_inputs")
        except Exception as exc:  # the data may be gone: the weights still export
            notes.append(f"no reference inputs: the run's data could not be read ({first_line(exc)})")
        module = network(task)
        reference: dict[str, Any] = {}
        statistics: dict[str, Any] = {}
        inputs_spec: list[dict[str, Any]] = []
        outputs_spec: list[dict[str, Any]] = []
        trace: tuple[torch.Tensor, ...] = ()
        in_names: list[str] = []
        out_names: list[str] = []
        if raws:
            kept = raws[:KEEP_REFERENCE]
            with tempfile.TemporaryDirectory(prefix="dlguide-export-") as scratch:
                with capture_calls(module, TRACE_ROWS) as calls, warnings_quiet():
                    samples = decode_inputs(task, raws)
                    outputs = predict_samples(task, samples)
                results = encode_outputs(task, outputs[:len(kept)], samples[:len(kept)], kept,
                                         out_dir=Path(scratch) if task.writes_files else None)
            statistics = reference_statistics(*describe_all(task, zip(samples, outputs)))
            trace = _trace_batch(calls)
            module.eval()
            with torch.inference_mode():
                eager = _flat(module(*trace))
            in_names = _names(task.export_input_names, "input", len(trace))
            out_names = _names(task.export_output_names, "output", len(eager))
            inputs_spec, outputs_spec = _tensor_spec(in_names, trace), _tensor_spec(out_names, eager)
            save_file({**{f"input.{n}": t.contiguous() for n, t in zip(in_names, trace)},
                       **{f"output.{n}": t.contiguous() for n, t in zip(out_names, eager)}},
                      str(work / REFERENCE_TENSORS))
            reference = {"inputs": _write_reference_inputs(kept, work), "results": _strip_paths(results),
                         "tensors": REFERENCE_TENSORS, "statistics_inputs": len(raws)}
        written = {"safetensors": "model.safetensors"}
        program: Any = None
        for fmt in wanted[1:]:
            if not trace:
                notes.append(f"{fmt}: not written (no reference inputs to trace the network on)")
                continue
            missing = [m for m in FORMAT_MODULES.get(fmt, ()) if importlib.util.find_spec(m) is None]
            if missing:
                notes.append(f"{fmt}: not written: it needs {' and '.join(missing)} "
                             "(pip install 'dlguide-core[export]')")
                continue
            try:
                with warnings_quiet():
                    if program is None:
                        program = _program(module, trace)
                    written[fmt] = _write_format(fmt, program, in_names, out_names, work)
            except Exception as exc:  # the model's own refusal (UsageError) included
                notes.append(f"{fmt}: this model cannot be written as {fmt} ({first_line(exc)[:200]}); "
                             "the other formats are in the bundle")
        metrics = {}
        if run.final_metrics.is_file():
            metrics = json.loads(run.final_metrics.read_text(encoding="utf-8"))
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": target.name,
            "task": name,
            **_versions(task, rt),
            "version": sha256(work / "model.safetensors")[:12],
            "source_run": str(run.path.resolve()),
            "input_kind": task.input_kind,
            "writes_files": task.writes_files,
            "export_module": task.export_module,
            "inputs": inputs_spec,
            "outputs": outputs_spec,
            "formats": written,
            "inference_files": inference,
            "metrics": {k: v for k, v in metrics.items() if k.startswith("test/")},
            "reference": reference,
            "statistics": statistics,
            "notes": notes,
        }
        manifest["files"] = {str(p.relative_to(work)): sha256(p) for p in sorted(work.rglob("*")) if p.is_file()}
        write_text_atomic(work / MANIFEST, json.dumps(manifest, indent=2))
        _share(work)
        if target.exists():
            target.rmdir()
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportResult(target, manifest, notes)


def _program(module: nn.Module, trace: tuple[torch.Tensor, ...]) -> Any:
    """The network as a ``torch.export`` program with a dynamic batch dimension."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(module, trace, dynamic_shapes=tuple({0: batch} for _ in trace), strict=False)


def _share(folder: Path) -> None:
    """The bundle folder gets the mode a new folder gets: ``mkdtemp`` made it private (the files in
    it were created with the umask's mode)."""
    folder.chmod(0o777 & ~_UMASK)


def _write_format(fmt: str, program: Any, in_names: list[str], out_names: list[str], folder: Path) -> str:
    import torch

    if fmt == "pt2":
        torch.export.save(program, str(folder / "model.pt2"))
        return "model.pt2"
    onnx_program = torch.onnx.export(program, input_names=in_names, output_names=out_names, dynamo=True,
                                     verbose=False)
    onnx_program.save(str(folder / "model.onnx"))
    return "model.onnx"


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    """torch.export and the ONNX exporter print pages of progress and warnings; keep one line per result."""
    import io
    import warnings

    sink = io.StringIO()
    before = logging.root.manager.disable
    try:
        logging.disable(logging.WARNING)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)


# -- loading ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class LoadedModel:
    """A model ready to predict: from a bundle or straight from a finished run directory."""

    name: str
    task: Any
    version: str
    source: Path
    manifest: dict[str, Any] | None
    runtime: str = "torch"


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, after every file it lists was checked against its sha256 and no
    unlisted file was found: a tampered or damaged bundle is refused in one line."""
    path = bundle / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} cannot be read as a bundle manifest ({first_line(exc)[:120]})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or "task" not in manifest:
        raise UsageError(f"{path} is not a dlguide bundle manifest (no task or files)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{bundle} is a bundle of format {manifest.get('format_version')!r}; this dlguide "
                         f"reads format {FORMAT_VERSION}")
    listed = manifest["files"]
    for rel, digest in listed.items():
        file = bundle / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not file.is_file() or file.is_symlink():
            raise UsageError(f"bundle {bundle}: {rel} is missing or not a plain file inside the bundle")
        if sha256(file) != digest:
            raise UsageError(f"bundle {bundle}: {rel} does not match its sha256 in {MANIFEST} "
                             "(changed or damaged); export the run again")
    for file in bundle.rglob("*"):
        rel = str(file.relative_to(bundle))
        if file.is_file() and rel != MANIFEST and rel not in listed:
            raise UsageError(f"bundle {bundle}: {rel} is not listed in {MANIFEST}; a bundle holds only what "
                             "its export wrote")
    return manifest


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_model(path: str | Path, *, runtime: str = "torch", name: str | None = None, device: str = "cpu",
               registry_runtime: Any = None) -> LoadedModel:
    """Load a bundle (checked against its manifest) or a finished run directory, for inference
    with eager PyTorch (``torch``) or ONNX Runtime (``onnx``, bundles with ``model.onnx``)."""
    from dlguide._runs import load_run, load_task

    folder = Path(path)
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a run directory or an export bundle")
    if not is_bundle(folder):
        if runtime != "torch":
            raise UsageError(f"{folder} is a run directory; the {runtime} runtime serves an export bundle "
                             f"(dlguide export {folder} --out BUNDLE --format safetensors,{runtime})")
        task = load_run(folder, runtime=registry_runtime, device=device)
        return LoadedModel(name or folder.resolve().name, task, sha256(folder / "model.safetensors")[:12],
                           folder, None, runtime)
    manifest = read_manifest(folder)
    task = load_task(folder, runtime=registry_runtime, device=device)
    if runtime == "onnx":
        onnx_file = manifest.get("formats", {}).get("onnx")
        if not onnx_file:
            raise UsageError(f"bundle {folder} has no model.onnx; export it with --format safetensors,onnx")
        replace_network(task, onnx_network(folder / onnx_file))
    return LoadedModel(name or folder.resolve().name, task, str(manifest.get("version", "")), folder, manifest,
                       runtime)


# -- verify -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Check:
    runtime: str
    max_abs_diff: float
    tolerance: float
    ok: bool
    note: str = ""


def verify_bundle(path: str | Path, *, registry_runtime: Any = None) -> list[Check]:
    """Run the bundle's reference inputs through every format it holds and compare each with
    PyTorch eager: the network on the traced batch, and the whole inference path on the
    reference inputs (decode -> predict_step with that format -> outputs)."""
    import torch
    from safetensors.torch import load_file

    folder = Path(path)
    if not is_bundle(folder):
        raise UsageError(f"{folder} is not an export bundle (no {MANIFEST})")
    loaded = load_model(folder, registry_runtime=registry_runtime)
    manifest = loaded.manifest or {}
    if not manifest.get("reference"):
        raise UsageError(f"bundle {folder} holds no reference inputs; nothing to verify against")
    tensors = load_file(str(folder / REFERENCE_TENSORS))
    in_names = [s["name"] for s in manifest["inputs"]]
    out_names = [s["name"] for s in manifest["outputs"]]
    trace = tuple(tensors[f"input.{n}"] for n in in_names)
    module = network(loaded.task)
    with torch.inference_mode():
        eager = _flat(module(*trace))
    stored = [tensors[f"output.{n}"] for n in out_names]
    checks = [_compare("torch (against export time)", eager, stored, 1e-5)]
    raws = read_reference_inputs(folder, manifest)
    with warnings_quiet():
        samples = decode_inputs(loaded.task, raws)
    eager_path = predict_samples(loaded.task, samples)
    for fmt, file in manifest.get("formats", {}).items():
        if fmt == "safetensors":
            continue
        if fmt == "onnx":
            other = onnx_network(folder / file)
        else:
            other = load_program(folder / file)
        with torch.inference_mode():
            got = _flat(other(*trace))
        checks.append(_compare(f"{fmt} network", got, eager, TOLERANCE[fmt]))
        replace_network(loaded.task, other)
        try:
            path_outputs = predict_samples(loaded.task, samples)
        finally:
            replace_network(loaded.task, module)
        checks.append(_compare(f"{fmt} inference path", _flat(path_outputs), _flat(eager_path), TOLERANCE[fmt]))
    return checks


def _compare(label: str, got: Sequence[torch.Tensor], want: Sequence[torch.Tensor], tol: float) -> Check:
    import torch

    diff = 0.0
    ok = len(got) == len(want)
    for a, b in zip(got, want):
        a, b = a.detach().cpu(), b.detach().cpu()
        if a.shape != b.shape:
            return Check(label, float("inf"), tol, False, f"shape {tuple(a.shape)} against {tuple(b.shape)}")
        if not a.is_floating_point():
            same = bool(torch.equal(a, b))
            diff = max(diff, 0.0 if same else float((a.double() - b.double()).abs().max()))
            ok = ok and same
            continue
        finite = b.isfinite()
        if not torch.equal(finite, a.isfinite()):
            return Check(label, float("inf"), tol, False, "non-finite values in different places")
        if bool(finite.any()):
            diff = max(diff, float((a[finite].double() - b[finite].double()).abs().max()))
            ok = ok and bool(torch.allclose(a[finite].double(), b[finite].double(), atol=tol, rtol=tol))
    return Check(label, diff, tol, ok)
