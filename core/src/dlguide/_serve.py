"""``dlguide serve``: finished runs and exported bundles behind an HTTP API (FastAPI + uvicorn).

    dlguide serve runs/digits runs/sine --port 8000
    curl -s localhost:8000/v1/models/sine/predict --json '{"inputs": [0.5, 1.57]}'
    curl -s localhost:8000/v1/models/digits/predict -F file=@seven.png

Routes: ``GET /`` (a web page), ``GET /v1/models``, ``POST /v1/models/{name}/predict``,
``POST /predict`` (one model served), ``POST /v1/models/{name}/reload``, ``GET
/v1/models/{name}/monitor``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, ``GET /docs``.
Every prediction goes through the task's decode -> predict_step -> encode, batched across
requests (``_batching``); errors are ``{"error": "one line"}`` with a 4xx or 5xx status.

This module is the command; ``_serve_http`` the app (with ``--workers N`` uvicorn runs N
processes of its ``create_app``, which reads the settings from ``DLGUIDE_SERVE_SETTINGS``),
``_serve_models`` the models of one worker and the folder the workers share, ``_batching``
the per-model queues, ``_serve_metrics`` the Prometheus metrics summed over workers.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from dlguide._batching import BatchLimits
from dlguide._errors import UsageError
from dlguide._serve_metrics import MULTIPROC_ENV

SETTINGS_ENV = "DLGUIDE_SERVE_SETTINGS"
TOKEN_ENV = "DLGUIDE_SERVE_TOKEN"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclasses.dataclass
class ServeSettings:
    """What every worker needs, passed to them as JSON in ``DLGUIDE_SERVE_SETTINGS``."""

    models: list[tuple[str, str]]  # (served name, run directory or bundle)
    runtime: str = "torch"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch_size: int = 32
    batch_timeout_ms: float = 5.0
    max_queue: int = 256
    token: str | None = None
    max_body_mb: float = 16.0
    allowed_roots: list[str] = dataclasses.field(default_factory=list)
    request_timeout_s: float = 30.0
    state_dir: str = ""

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise UsageError(f"{SETTINGS_ENV} is not set: start the server with 'dlguide serve'")
        data = json.loads(raw)
        data["models"] = [tuple(pair) for pair in data["models"]]
        return cls(**data)

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def limits(self) -> BatchLimits:
        return BatchLimits(self.max_batch_size, self.batch_timeout_ms / 1000, self.max_queue, self.request_timeout_s)


# -- the command -----------------------------------------------------------------------------------
_EXTRA = {"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client",
          "python_multipart": "python-multipart"}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dlguide serve`` to the CLI's subcommands."""
    p = subparsers.add_parser("serve", help="serve runs or bundles over HTTP (JSON API, web page, metrics)",
                              description="Serve finished runs or exported bundles: POST /v1/models/NAME/predict, "
                              "a web page at /, Prometheus metrics at /metrics, the API at /docs.")
    p.add_argument("models", metavar="RUN_OR_BUNDLE", nargs="+",
                   help="run directories or exported bundles; NAME=PATH serves one as NAME (default: its folder name)")
    p.add_argument("--host", metavar="HOST", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface; give --token then)")
    p.add_argument("--port", metavar="N", type=int, default=8000, help="port to listen on (0: any free one)")
    p.add_argument("--workers", metavar="N", type=int, default=1, help="worker processes, each with every model loaded")
    p.add_argument("--max-batch-size", metavar="N", type=int, default=32, help="most samples in one batch")
    p.add_argument("--batch-timeout-ms", metavar="MS", type=float, default=5.0,
                   help="how long a batch waits for more requests once its first one arrived")
    p.add_argument("--max-queue", metavar="N", type=int, default=256,
                   help="most samples waiting per model and worker; more are refused with 503")
    p.add_argument("--runtime", dest="serve_runtime", choices=("torch", "onnx"), default="torch",
                   help="run the models with torch, or a bundle's model.onnx with onnxruntime")
    p.add_argument("--token", metavar="TOKEN", help=f"require 'Authorization: Bearer TOKEN' to predict and reload "
                   f"(default: ${TOKEN_ENV})")
    p.add_argument("--max-body-mb", metavar="MB", type=float, default=16.0,
                   help="largest request body in MB (413 beyond)")
    p.add_argument("--allowed-root", metavar="DIR", action="append", default=[],
                   help="a folder reloads may load from (repeatable; default: the folders holding the models given)")
    p.add_argument("--request-timeout-s", metavar="S", type=float, default=30.0,
                   help="seconds a request may wait for its answer (504 beyond)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="how much the server logs (info: one line per request)")
    p.set_defaults(handler=cmd_serve)
    return p


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the models (a bad one: a usage error before anything listens), then run uvicorn."""
    import importlib.util

    missing = [pip for module, pip in _EXTRA.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UsageError(f"dlguide serve needs {', '.join(missing)}: pip install 'dlguide-core[serve]'")
    settings = settings_from_args(args)
    from dlguide._serve_models import load

    loaded = {name: load(path, runtime=settings.runtime, name=name) for name, path in settings.models}
    _check_port(settings.host, settings.port)
    if not settings.token and settings.host not in _LOOPBACK:
        print(f"dlguide: warning: serving on {settings.host} without --token: anyone who reaches this port "
              "can predict and reload models", file=sys.stderr)
    import uvicorn

    folder = Path(tempfile.mkdtemp(prefix="dlguide-serve-"))
    (folder / "metrics").mkdir()
    settings.state_dir = str(folder)
    saved = {key: os.environ.get(key) for key in (MULTIPROC_ENV, SETTINGS_ENV)}
    os.environ[MULTIPROC_ENV] = str(folder / "metrics")
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    options: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_level": args.log_level,
                               "log_config": _log_config(args.log_level)}
    try:
        if settings.workers == 1:
            from dlguide._serve_http import create_app

            uvicorn.run(create_app(settings, loaded), **options)
        else:
            loaded.clear()  # each worker loads its own copy
            uvicorn.run("dlguide._serve_http:create_app", factory=True, workers=settings.workers, **options)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The command's options checked (one-line usage errors) into the workers' settings."""
    models = [_model_arg(arg) for arg in args.models]
    names = [name for name, _ in models]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"two models would be served as {name!r}; name them with NAME=PATH")
    for key, low in (("workers", 1), ("max_batch_size", 1), ("max_queue", 1), ("batch_timeout_ms", 0)):
        if getattr(args, key) < low:
            raise UsageError(f"--{key.replace('_', '-')} must be >= {low}, not {getattr(args, key)}")
    for key in ("max_body_mb", "request_timeout_s"):
        if not getattr(args, key) > 0:
            raise UsageError(f"--{key.replace('_', '-')} must be > 0, not {getattr(args, key)}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, not {args.port}")
    for root in args.allowed_root:
        if not Path(root).is_dir():
            raise UsageError(f"--allowed-root {root} is not a folder")
    roots = [str(Path(r).resolve()) for r in args.allowed_root] or sorted({str(Path(p).parent) for _, p in models})
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    return ServeSettings(models=models, runtime=args.serve_runtime, host=args.host, port=args.port,
                         workers=args.workers, max_batch_size=args.max_batch_size,
                         batch_timeout_ms=args.batch_timeout_ms, max_queue=args.max_queue, token=token or None,
                         max_body_mb=args.max_body_mb, allowed_roots=roots, request_timeout_s=args.request_timeout_s)


def _model_arg(arg: str) -> tuple[str, str]:
    """``PATH`` (served under its folder's name) or ``NAME=PATH``."""
    name, sep, path = arg.partition("=")
    if not sep or Path(arg).exists():
        name, path = Path(arg).resolve().name, arg
    if not Path(path).exists():
        raise UsageError(f"{path} not found; expected a run directory or an exported bundle")
    if not _NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a usable model name (letters, digits, '.', '_', '-'); "
                         f"serve it as NAME={path}")
    return name, str(Path(path).resolve())


def _check_port(host: str, port: int) -> None:
    """Fail with one line before loading workers when the address cannot be listened on."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with this module's logger printed the same way."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["dlguide"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
