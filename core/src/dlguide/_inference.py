"""One inference path for every task: ``decode`` -> ``predict_step`` -> ``encode``.

    raw input (file bytes with a name, a text, a JSON value)
        (task.output_name(raw)        a task that writes files: no two inputs may write one file)
        -> task.decode(raw)            one sample of tensors (bad input: a UsageError naming it)
        -> task.collate(samples)       batches of at most predict_batch_size (or batch_size)
        -> task.predict_step(batch)    tensors in, tensors out, under inference mode, in eval mode
        -> split per sample, to CPU
        -> task.encode(output, sample, raw, out_dir=...)   a JSON-safe dict, which the core starts
                                       with "input" (the task's, else ``raw.echo``)

``dlguide predict``, export and the HTTP server all go through :func:`predict`, so a task
that implements the three methods is predicted, exported and served with no extra code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlguide._errors import UsageError

if TYPE_CHECKING:
    from dlguide._task import Task

INPUT_KINDS = ("file", "text", "json")


@dataclasses.dataclass(frozen=True)
class RawInput:
    """One input as a client gives it.

    ``value`` is the file's bytes, the text, or the JSON value (a user id, a seed); ``name`` is
    the file name (its suffix tells the format) or a label for the input; ``path`` is set when
    the input is a local file or folder (the command line), which ``decode`` may read directly.
    """

    value: Any = None
    name: str = ""
    media_type: str = ""
    path: Path | None = None

    @property
    def label(self) -> str:
        """How the input is named in results and errors: its local path, its name, or its value."""
        if self.path is not None:
            return str(self.path)
        if self.name:
            return self.name
        text = str(self.value)
        return text if len(text) <= 60 else text[:57] + "..."

    @property
    def echo(self) -> Any:
        """How a prediction names this input under ``"input"``: a JSON number or flag as itself
        (a seed stays a number), anything else by its label (local path, file name, cut text)."""
        value = self.value
        if self.path is None and isinstance(value, (bool, int, float)) and math.isfinite(value):
            return value
        return self.label

    def data(self) -> bytes:
        """The file's bytes (read from ``path`` when the value was not given)."""
        if isinstance(self.value, (bytes, bytearray, memoryview)):
            return bytes(self.value)
        if self.path is not None and self.path.is_file():
            return self.path.read_bytes()
        raise UsageError(f"input {self.label!r} is not a file")

    def text(self) -> str:
        """The input as text."""
        if isinstance(self.value, str):
            return self.value
        if isinstance(self.value, (bytes, bytearray)):
            try:
                return bytes(self.value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(f"input {self.label!r} is not UTF-8 text (invalid byte at {exc.start})") from None
        if self.value is None:
            raise UsageError(f"input {self.label!r} holds no text")
        return str(self.value)

    @contextlib.contextmanager
    def local_path(self) -> Iterator[Path]:
        """A local path holding the input: ``path`` itself, or its bytes in a temporary folder
        under the input's own file name (so a reader can tell the format from the suffix)."""
        if self.path is not None and self.path.exists():
            yield self.path
            return
        name = Path(self.name or "input").name or "input"
        with tempfile.TemporaryDirectory(prefix="dlguide-input-") as folder:
            path = Path(folder) / name
            path.write_bytes(self.data())
            yield path


def cli_inputs(task: Task, args: Sequence[str]) -> list[RawInput]:
    """Command-line arguments as raw inputs of ``task``'s kind: paths for ``file`` tasks
    (checked to exist), texts, or JSON values (a bare word stays a string)."""
    kind = task.input_kind
    out = []
    for arg in args:
        if kind == "file":
            path = Path(arg).expanduser()
            if not path.exists():
                raise UsageError(f"input file not found: {arg}")
            out.append(RawInput(name=path.name, path=path))
        elif kind == "json":
            try:
                value = json.loads(arg)
            except ValueError:
                value = arg
            out.append(RawInput(value=value, name=arg))
        else:
            out.append(RawInput(value=arg))
    return out


def split_batch(outputs: Any, n: int) -> list[Any]:
    """Batched outputs (a tensor, or tuples, lists and dicts of them) -> one output per sample, on the CPU."""
    import torch

    if isinstance(outputs, torch.Tensor):
        if outputs.dim() == 0 or outputs.shape[0] != n:
            raise ValueError(f"predict_step returned a tensor of shape {tuple(outputs.shape)} for a batch of {n}")
        cpu = outputs.detach().cpu()
        return [cpu[i] for i in range(n)]
    if isinstance(outputs, Mapping):
        parts = {k: split_batch(v, n) for k, v in outputs.items()}
        return [{k: parts[k][i] for k in parts} for i in range(n)]
    if isinstance(outputs, (list, tuple)):
        rows = zip(*(split_batch(v, n) for v in outputs))
        return [tuple(row) if isinstance(outputs, tuple) else list(row) for row in rows]
    raise ValueError(f"predict_step returned a {type(outputs).__name__}; expected tensors")


def to_json(value: Any) -> Any:
    """Tensors and numpy values as plain lists and numbers; non-finite floats as strings."""
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple, dict, str)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def decode_inputs(task: Task, inputs: Sequence[RawInput]) -> list[Any]:
    """Decode every input (a bad one: ``UsageError`` naming it, before any work is done); a task
    that writes files has each input's output name checked against the others' first."""
    if task.writes_files:
        claimed: dict[str, RawInput] = {}
        for raw in inputs:
            name = task.output_name(raw)
            if name in claimed:
                raise UsageError(f"inputs {claimed[name].label} and {raw.label} would both be written to {name}; "
                                 "predict them in separate calls or into different output folders")
            claimed[name] = raw
    return [task.decode(raw) for raw in inputs]


def predict_samples(task: Task, samples: Sequence[Any], *, batch_size: int | None = None) -> list[Any]:
    """Decoded samples -> one output per sample (on the CPU): collated into batches of at most
    ``batch_size`` (the task's ``predict_batch_size``, else its config's) and run through
    ``predict_step`` under inference mode with the model in eval mode."""
    import torch

    from dlguide._data import model_device, to_device

    if task.model is None:
        raise UsageError(f"task {task.name!r} has no model loaded; load a finished run first")
    size = max(1, batch_size or task.predict_batch_size or int(getattr(task.config, "batch_size", 32)))
    device = model_device(task.model)
    outputs: list[Any] = []
    was_training = task.model.training
    task.model.eval()
    try:
        for start in range(0, len(samples), size):
            chunk = list(samples[start:start + size])
            batch = to_device(task.collate(chunk), device)
            with torch.inference_mode():
                outputs.extend(split_batch(task.predict_step(batch), len(chunk)))
    finally:
        task.model.train(was_training)
    return outputs


def encode_outputs(task: Task, outputs: Sequence[Any], samples: Sequence[Any], inputs: Sequence[RawInput], *,
                   out_dir: Path | None = None) -> list[dict[str, Any]]:
    """Each sample's output -> its JSON-safe result; a task that writes files writes them into
    ``out_dir`` (never through a link that was planted at an output's name)."""
    if task.writes_files and out_dir is None:
        raise UsageError(f"task {task.name!r} writes its predictions as files: give an output folder")
    results = []
    for output, sample, raw in zip(outputs, samples, inputs):
        if out_dir is not None and task.writes_files:
            target = out_dir / task.output_name(raw)
            if target.is_symlink():
                target.unlink()
        results.append(with_input(task.encode(output, sample, raw, out_dir=out_dir), raw))
    return results


def with_input(row: Mapping[str, Any], raw: RawInput) -> dict[str, Any]:
    """``row`` starting with ``"input"``: the task's own naming of the input when it gave one, else
    ``raw.echo``, so that every task's rows (a third party's too) say first what they answer."""
    if not isinstance(row, Mapping):
        raise TypeError(f"encode returned a {type(row).__name__}; expected a dict")
    first = row["input"] if "input" in row else raw.echo
    return {"input": first, **{k: v for k, v in row.items() if k != "input"}}


def format_row(row: Mapping[str, Any]) -> str:
    """A prediction as one printed line, its input first: a classifier's row (``encode_classes``)
    as ``a fine film  ->  fresh 0.55  (rotten 0.45)``, any other as ``0.5  ->  y=0.47  sin(x)=0.48``."""
    shown = " ".join(str(row.get("input", "")).split())  # a text's line breaks would split the line
    if _is_classes(row):
        others = ", ".join(f"{c['label']} {c['probability']:.2f}" for c in row["top"][1:])
        return f"{shown}  ->  {row['label']} {row['probability']:.2f}" + (f"  ({others})" if others else "")
    rest = "  ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                     for k, v in row.items() if k != "input")
    return f"{shown}  ->  {rest}" if "input" in row else rest


def _is_classes(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` has the classifier shape of ``encode_classes``."""
    top = row.get("top")
    return (isinstance(row.get("probability"), (int, float)) and "label" in row and isinstance(top, list)
            and all(isinstance(c, Mapping) and isinstance(c.get("probability"), (int, float)) for c in top))


def predict(task: Task, inputs: Sequence[RawInput], *, out_dir: Path | None = None,
            batch_size: int | None = None,
            observe: Callable[[Any, Any], None] | None = None) -> list[dict[str, Any]]:
    """Run ``inputs`` through the task's decode -> predict_step -> encode; one result per input.

    Every input is decoded before the first batch runs, so one bad input costs no work.
    ``task.model`` must be loaded (``dlguide.load_run``). ``observe(sample, output)`` is called
    for each sample before it is encoded (drift statistics use it).
    """
    if task.model is None:
        raise UsageError(f"task {task.name!r} has no model loaded; load a finished run first")
    if task.writes_files and out_dir is None:
        raise UsageError(f"task {task.name!r} writes its predictions as files: give an output folder")
    samples = decode_inputs(task, inputs)
    outputs = predict_samples(task, samples, batch_size=batch_size)
    if observe is not None:
        for sample, output in zip(samples, outputs):
            observe(sample, output)
    return encode_outputs(task, outputs, samples, inputs, out_dir=out_dir)
