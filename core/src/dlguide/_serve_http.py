"""The HTTP side of ``dlguide serve``: the FastAPI app, its routes, request bodies and errors.

Every error is ``{"error": "one line"}``: 400 a body that does not parse (JSON, base64,
multipart), 401 a missing token, 403 a reload outside the allowed folders, 404 an unknown
model or route, 413 a body over ``--max-body-mb`` (told by Content-Length or found while
reading), 415 a content type not taken, 422 a well-formed request the model cannot use (a
missing field, an input its task's decode refuses), 503 a full queue (with Retry-After), 504
past ``--request-timeout-s``, 500 anything unexpected (logged; the server keeps serving).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from dlguide import __version__
from dlguide._batching import ModelSlot, ServeError
from dlguide._errors import UsageError, first_line
from dlguide._inference import RawInput
from dlguide._serve import ServeSettings
from dlguide._serve_models import ModelServer

log = logging.getLogger("dlguide.serve")
_PAGE = Path(__file__).parent / "static" / "index.html"
_EXPECTED = {"file": 'files as {"b64": "...", "filename": "x.png"}', "text": "texts",
             "json": "JSON values (numbers, ids, seeds)"}
_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {
        "schema": {"type": "object", "required": ["inputs"], "additionalProperties": False, "properties": {
            "inputs": {"type": "array", "minItems": 1, "items": {},
                       "description": "texts, JSON values (numbers, user ids, seeds), or files as "
                                      '{"b64": "...", "filename": "x.png"}, as the model\'s input_kind says'}}},
        "example": {"inputs": [0.5, 1.57]}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}
_RELOAD_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}},
    "example": {"path": "runs/digits-v2"}}}}}


def create_app(settings: ServeSettings | None = None, preloaded: dict[str, Any] | None = None) -> FastAPI:
    """The app of one worker (uvicorn's factory: settings from ``DLGUIDE_SERVE_SETTINGS``);
    ``preloaded`` are models ``dlguide serve`` already loaded (name -> LoadedModel)."""
    server = ModelServer(settings or ServeSettings.from_env(), preloaded)
    assets = _swagger_assets()
    app = FastAPI(title="dlguide serve", version=__version__, lifespan=server.lifespan,
                  description="Predictions of dlguide runs and bundles, batched across requests.",
                  docs_url=None if assets else "/docs")
    _add_error_handlers(app)
    if assets:  # the API page from files installed with the server: it renders with no network
        from fastapi.openapi.docs import get_swagger_ui_html
        from fastapi.staticfiles import StaticFiles

        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="dlguide serve: API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon-32x32.png")

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_PAGE.read_text(encoding="utf-8"))

    @app.get("/healthz", summary="the worker process is alive (and which one answered)")
    async def healthz() -> dict[str, Any]:
        return {"status": "alive", "worker": os.getpid()}

    @app.get("/readyz", summary="200 once every worker has every model loaded and warmed, else 503")
    async def readyz() -> JSONResponse:
        status, body = server.readiness()
        return JSONResponse(body, status_code=status)

    @app.get("/v1/models", summary="the models served")
    async def models() -> dict[str, Any]:
        return {"models": [server.describe(slot) for slot in server.slots.values()]}

    @app.get("/v1/models/{name}", summary="one model")
    async def model(name: str) -> dict[str, Any]:
        return server.describe(server.slot(name))

    @app.post("/v1/models/{name}/predict", summary="predict with a model", openapi_extra=_PREDICT_BODY)
    async def predict(name: str, request: Request) -> dict[str, Any]:
        deadline = time.monotonic() + server.settings.request_timeout_s
        server.authorize(request)
        return await _predict(server, server.slot(name, request), request, deadline)

    @app.post("/predict", summary="predict with the one model served", openapi_extra=_PREDICT_BODY)
    async def predict_only(request: Request) -> dict[str, Any]:
        deadline = time.monotonic() + server.settings.request_timeout_s
        server.authorize(request)
        if len(server.slots) != 1:
            raise ServeError(400, f"{len(server.slots)} models are served ({', '.join(server.slots)}); "
                             "POST to /v1/models/NAME/predict")
        return await _predict(server, server.slot(next(iter(server.slots)), request), request, deadline)

    @app.post("/v1/models/{name}/reload", summary="swap in a new version of a model", openapi_extra=_RELOAD_BODY)
    async def reload(name: str, request: Request) -> dict[str, Any]:
        server.authorize(request)
        slot = server.slot(name, request)
        payload = await json_object(request, {"path"})
        return await server.reload(slot, payload.get("path"))

    @app.get("/v1/models/{name}/monitor", summary="drift of the served inputs and predictions")
    async def monitor(name: str) -> dict[str, Any]:
        return await asyncio.to_thread(server.monitor, name)

    @app.get("/metrics", summary="Prometheus metrics, summed over the workers")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await asyncio.to_thread(server.scrape), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Guard, server=server)
    return app


async def _predict(server: ModelServer, slot: ModelSlot, request: Request, deadline: float) -> dict[str, Any]:
    try:
        served = await asyncio.wait_for(slot.current(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise ServeError(504, f"model {slot.name!r} is still loading; retry shortly") from None
    raws = await read_inputs(request, served.loaded.task.input_kind, max_inputs=server.settings.max_queue,
                             max_part=server.settings.max_body)
    return await server.predict(slot, raws, deadline)


# -- request bodies ------------------------------------------------------------------------------
async def json_object(request: Request, fields: set[str]) -> dict[str, Any]:
    """The body as a JSON object with no keys but ``fields``."""
    try:
        payload = json.loads(await request.body())
    except ValueError as exc:
        raise ServeError(400, f"the request body is not valid JSON: {first_line(exc)}") from None
    expected = ", ".join(map(repr, sorted(fields)))
    if not isinstance(payload, dict):
        raise ServeError(422, f"the request body must be a JSON object with {expected}, not {_kind(payload)}")
    unknown = sorted(set(payload) - fields)
    if unknown:
        raise ServeError(422, f"unknown field {unknown[0]!r}; expected {expected}")
    return payload


async def read_inputs(request: Request, kind: str, *, max_inputs: int, max_part: int) -> list[RawInput]:
    """A predict request's inputs: JSON ``{"inputs": [...]}`` or uploaded files (multipart)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return await _uploaded(request, kind, max_inputs, max_part)
    if media not in ("", "application/json") and not media.endswith("+json"):
        raise ServeError(415, f"content type {media!r} is not taken; send JSON {{\"inputs\": [...]}} or "
                         "multipart/form-data files")
    payload = await json_object(request, {"inputs"})
    if "inputs" not in payload:
        raise ServeError(422, f"missing field 'inputs': a list of {_EXPECTED[kind]}")
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise ServeError(422, f"'inputs' must be a list of {_EXPECTED[kind]}, not {_kind(inputs)}")
    if not inputs:
        raise ServeError(422, "'inputs' is empty; give at least one input")
    if len(inputs) > max_inputs:
        raise ServeError(413, f"{len(inputs)} inputs in one request; this server takes at most {max_inputs}")
    return [_json_input(item, i, kind) for i, item in enumerate(inputs)]


def _json_input(item: Any, i: int, kind: str) -> RawInput:
    if kind == "json":
        return RawInput(value=item)
    if kind == "text":
        if not isinstance(item, str):
            raise ServeError(422, f"inputs[{i}] must be a text (a JSON string), not {_kind(item)}")
        return RawInput(value=item)
    if not isinstance(item, dict) or not isinstance(item.get("b64"), str):
        raise ServeError(422, f"inputs[{i}] must be a file as {_EXPECTED['file']}, not {_kind(item)}")
    unknown = sorted(set(item) - {"b64", "filename", "media_type"})
    if unknown:
        raise ServeError(422, f"inputs[{i}] has an unknown field {unknown[0]!r}; expected b64, filename, media_type")
    try:
        data = base64.b64decode(item["b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServeError(400, f"inputs[{i}].b64 is not valid base64: {first_line(exc)}") from None
    return RawInput(value=data, name=_file_name(item.get("filename"), i), media_type=str(item.get("media_type") or ""))


async def _uploaded(request: Request, kind: str, max_inputs: int, max_part: int) -> list[RawInput]:
    if kind == "json":
        raise ServeError(415, f"this model takes {_EXPECTED['json']}, not files; send JSON {{\"inputs\": [...]}}")
    form = await request.form(max_files=max_inputs, max_fields=max_inputs, max_part_size=max_part)
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise ServeError(422, "the multipart request holds no file; upload one or more files")
        return [RawInput(value=await f.read(), name=_file_name(f.filename, i), media_type=f.content_type or "")
                for i, f in enumerate(files)]
    finally:
        await form.close()


def _file_name(name: Any, i: int) -> str:
    """The client's file name without any folder part (its suffix tells the task the format)."""
    base = str(name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return base if base not in ("", ".", "..") else f"input{i}"


def _kind(value: Any) -> str:
    for kind, name in ((bool, "true/false"), (dict, "an object"), (list, "a list"), (str, "a string"),
                       ((int, float), "a number"), (type(None), "null")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


# -- errors and the outermost layer -----------------------------------------------------------------
def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return error(exc.status, str(exc), exc.headers)

    @app.exception_handler(UsageError)
    async def usage_error(request: Request, exc: UsageError) -> JSONResponse:
        return error(422, first_line(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = {404: f"no route {request.method} {request.url.path}; see /docs",
                   405: f"{request.method} is not allowed on {request.url.path}; see /docs"}.get(exc.status_code)
        return error(exc.status_code, message or first_line(Exception(exc.detail)), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, f"internal error: {type(exc).__name__}: {first_line(exc)}")


class Guard:
    """Outermost ASGI layer: refuses a body over the limit (413, from Content-Length or while it
    is read) and counts every request, with its route, model, status and time, in the metrics."""

    def __init__(self, app: Any, server: ModelServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        limit = self.server.settings.max_body
        too_large = f"the request body is over the limit of {self.server.settings.max_body_mb:g} MB (--max-body-mb)"
        try:
            declared = dict(scope.get("headers") or ()).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                refusal = error(413, too_large) if declared.isdigit() else error(400, "Content-Length is not a number")
                await refusal(scope, receive, send_status)
                return
            seen = [0]

            async def limited() -> dict:
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > limit:
                        raise ServeError(413, too_large)
                return message

            await self.app(scope, limited, send_status)
        finally:
            metrics = self.server.metrics
            if metrics is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.request(scope.get("dlguide.model", ""), route, status[0], time.perf_counter() - start)


def _swagger_assets() -> str | None:
    """The folder of Swagger UI's files when swagger-ui-bundle is installed (FastAPI's own /docs
    loads them from a CDN, which an offline machine cannot reach)."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return str(swagger_ui_path)
