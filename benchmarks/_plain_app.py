"""The baseline of benchmarks/serving.py: a plain FastAPI app that calls the model once per
request, as a user would write it around a loaded run (no batching across requests, no queue,
no metrics), run by uvicorn like ``dlguide serve``.

    python benchmarks/_plain_app.py --port 8001 NAME=BUNDLE [NAME=BUNDLE ...]
"""

from __future__ import annotations

import argparse
import base64

import uvicorn
from fastapi import FastAPI, HTTPException, Request

from dlguide import RawInput, UsageError, predict
from dlguide._export import load_model


def build(models: dict[str, str]) -> FastAPI:
    tasks = {name: load_model(path).task for name, path in models.items()}
    app = FastAPI()

    @app.post("/v1/models/{name}/predict")
    def predict_route(name: str, body: dict) -> dict:  # a plain def: FastAPI runs it in its thread pool
        task = tasks.get(name)
        if task is None:
            raise HTTPException(404, f"no model {name!r}")
        raws = [RawInput(value=base64.b64decode(x["b64"]), name=x.get("filename", "")) if isinstance(x, dict)
                else RawInput(value=x) for x in body.get("inputs", [])]
        try:
            return {"model": name, "predictions": predict(task, raws)}
        except UsageError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/readyz")
    def ready(request: Request) -> dict:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    models = dict(arg.split("=", 1) for arg in args.models)
    uvicorn.run(build(models), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
