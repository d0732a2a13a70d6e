"""Serving: ``dlguide serve`` under 1, 8 and 32 concurrent clients on loopback, against a direct
in-process call and a plain FastAPI app that calls the model per request; ONNX Runtime against
PyTorch eager in process. Saves benchmarks/results/serving.json.

    python benchmarks/serving.py [--clients 1 8 32] [--requests 300] [--seconds 15]

Models: vision.classify on digits and nlp.classify (an LSTM on Rotten Tomatoes), trained
briefly here and exported as bundles; every request carries one input (an uploaded PNG, a
text), taken in turn from the bundle's reference inputs. Three servers, one at a time, all run
by uvicorn with one worker on 127.0.0.1:

- ``batched``: ``dlguide serve`` with dynamic batching (``--max-batch-size 32
  --batch-timeout-ms 5``);
- ``unbatched``: ``dlguide serve --max-batch-size 1`` (the same server, one sample per batch);
- ``plain``: benchmarks/_plain_app.py, a FastAPI route that calls ``dlguide.predict`` per request.

Clients are asyncio coroutines, each on its own keep-alive connection, sending prepared
requests (a client far lighter than httpx). Each (server, model, clients) level sends at most ``--requests`` requests or runs for at most
``--seconds``, whichever ends first, after 20 untimed warm-up requests. Reported: requests per
second, p50 and p99 latency in ms, failed requests. The targets: the server's p50 at one
client within 2 ms of the direct call's (``predict`` on one input in process), and batching at
32 clients at least twice the unbatched throughput. Clients and server share the machine's
cores, so the figures are a lower bound of what a separate client would see.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, environment, save_json

HERE = Path(__file__).parent
RUNS = {
    "digits": ("vision.classify", ["epochs=2", "seed=0"]),
    "reviews": ("nlp.classify", ["epochs=1", "limit_train_batches=60", "embedding_dim=32", "hidden_size=32",
                                 "max_length=32", "seed=0"]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(folder: Path) -> dict[str, Path]:
    """Train each model briefly and export it (safetensors and ONNX)."""
    from dlguide._export import export_run
    from dlguide._runs import run_task

    bundles = {}
    for name, (task, sets) in RUNS.items():
        run = folder / f"{name}-run"
        run_task(task, overrides=sets, out=run, progress="none")
        bundles[name] = export_run(run, folder / name, ["safetensors", "onnx"]).path
        print(f"{name}: trained and exported {task}", flush=True)
    return bundles


def payloads(bundle: Path) -> list[dict[str, Any]]:
    """One request body per reference input of the bundle."""
    from dlguide._export import read_manifest, read_reference_inputs

    bodies = []
    for raw in read_reference_inputs(bundle, read_manifest(bundle)):
        value = raw.value
        item = {"b64": base64.b64encode(value).decode(), "filename": raw.name} if isinstance(value, bytes) else value
        bodies.append({"inputs": [item]})
    return bodies


class Server:
    def __init__(self, command: list[str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # the server's log goes to a file: an unread pipe fills up and stalls the server
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log, text=True)

    def wait_ready(self, timeout: float = 180) -> None:
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def start(kind: str, bundles: dict[str, Path]) -> Server:
    port = free_port()
    models = [f"{name}={path}" for name, path in bundles.items()]
    if kind == "plain":
        command = [sys.executable, str(HERE / "_plain_app.py"), "--port", str(port), *models]
    else:
        batch = ["--max-batch-size", "32", "--batch-timeout-ms", "5"] if kind == "batched" else ["--max-batch-size", "1"]
        command = [sys.executable, "-m", "dlguide", "serve", *models, "--port", str(port), "--log-level", "warning",
                   *batch]
    server = Server(command, port)
    server.wait_ready()
    return server


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests: a client lighter than
    httpx, so that on a shared 2-core machine the clients take less of the server's CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def prepared(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _load(port: int, path: str, bodies: list[dict[str, Any]], clients: int, requests: int, seconds: float
                ) -> dict[str, Any]:
    messages = [prepared(path, body) for body in bodies]
    connections = [await Connection.open(port) for _ in range(clients)]
    latencies: list[float] = []
    failures = 0
    sent = 0
    try:
        for i in range(20):  # warm-up: first batches, allocator
            await connections[i % clients].send(messages[i % len(messages)])
        end = time.perf_counter() + seconds

        async def worker(connection: Connection) -> None:
            nonlocal failures, sent
            while sent < requests and time.perf_counter() < end:
                message = messages[sent % len(messages)]
                sent += 1
                t0 = time.perf_counter()
                status = await connection.send(message)
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.close()
    ms = sorted(x * 1000 for x in latencies)
    return {"clients": clients, "requests": len(ms), "failed": failures, "seconds": round(elapsed, 2),
            "throughput": round(len(ms) / elapsed, 1), "p50_ms": round(ms[len(ms) // 2], 2),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2)}


def direct_latency(bundle: Path, bodies: list[dict[str, Any]], calls: int = 200) -> dict[str, Any]:
    """``dlguide.predict`` on one input in this process, per runtime, and the network alone at
    batches of 1 and 32 (predict_samples on decoded samples) for ONNX Runtime against eager."""
    import torch

    from dlguide._export import load_model, read_manifest, read_reference_inputs
    from dlguide._inference import decode_inputs, predict, predict_samples

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    raws = read_reference_inputs(bundle, read_manifest(bundle))
    out: dict[str, Any] = {}
    for runtime in ("torch", "onnx"):
        task = load_model(bundle, runtime=runtime).task
        times = []
        for i in range(calls + 20):
            t0 = time.perf_counter()
            predict(task, [raws[i % len(raws)]])
            if i >= 20:
                times.append((time.perf_counter() - t0) * 1000)
        samples = decode_inputs(task, raws)
        batch32 = [samples[i % len(samples)] for i in range(32)]
        step = {}
        for size, chunk in (("1", samples[:1]), ("32", batch32)):
            runs = []
            for i in range(60):
                t0 = time.perf_counter()
                predict_samples(task, chunk, batch_size=len(chunk))
                if i >= 10:
                    runs.append((time.perf_counter() - t0) * 1000)
            step[size] = round(statistics.median(runs), 3)
        out[runtime] = {"predict_p50_ms": round(statistics.median(times), 3), "batch_ms": step}
    del bodies
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=15, help="most seconds per level")
    args = parser.parse_args()
    results: dict[str, Any] = {"levels": {}, "direct": {}}
    with tempfile.TemporaryDirectory(prefix="dlguide-serving-") as tmp:
        bundles = prepare(Path(tmp))
        bodies = {name: payloads(path) for name, path in bundles.items()}
        for name, path in bundles.items():
            results["direct"][name] = direct_latency(path, bodies[name])
            print(f"{name}: direct {results['direct'][name]}", flush=True)
        for kind in ("batched", "unbatched", "plain"):
            server = start(kind, bundles)
            try:
                for name in bundles:
                    path = f"/v1/models/{name}/predict"
                    for clients in args.clients:
                        level = asyncio.run(_load(server.port, path, bodies[name], clients, args.requests,
                                                  args.seconds))
                        results["levels"].setdefault(name, {}).setdefault(kind, []).append(level)
                        print(f"{kind:>9} {name:>8} {clients:>3} clients: {level['throughput']:>7} req/s  "
                              f"p50 {level['p50_ms']:>7} ms  p99 {level['p99_ms']:>7} ms  failed {level['failed']}",
                              flush=True)
            finally:
                server.stop()
    summary = {}
    for name, kinds in results["levels"].items():
        direct = results["direct"][name]["torch"]["predict_p50_ms"]
        one = {kind: next(lv for lv in levels if lv["clients"] == min(args.clients)) for kind, levels in kinds.items()}
        many = {kind: next(lv for lv in levels if lv["clients"] == max(args.clients)) for kind, levels in kinds.items()}
        onnx = results["direct"][name]["onnx"]["batch_ms"]
        eager = results["direct"][name]["torch"]["batch_ms"]
        summary[name] = {
            "direct_p50_ms": direct,
            "overhead_p50_ms": {kind: round(lv["p50_ms"] - direct, 2) for kind, lv in one.items()},
            "batching_speedup_at_max_clients": round(many["batched"]["throughput"] / many["unbatched"]["throughput"], 2),
            "batched_vs_plain_at_max_clients": round(many["batched"]["throughput"] / many["plain"]["throughput"], 2),
            "onnx_over_eager_latency": {size: round(onnx[size] / eager[size], 3) for size in eager},
            "failed_requests": sum(lv["failed"] for levels in kinds.values() for lv in levels),
        }
    results["summary"] = summary
    for name, row in summary.items():
        print(f"{name}: overhead over a direct call at 1 client {row['overhead_p50_ms']} ms (target <= 2), "
              f"batching x{row['batching_speedup_at_max_clients']} at {max(args.clients)} clients (target >= 2), "
              f"batched vs plain FastAPI x{row['batched_vs_plain_at_max_clients']}, "
              f"ONNX Runtime / eager latency {row['onnx_over_eager_latency']}")
    results["environment"] = environment(clients=args.clients, requests=args.requests, seconds=args.seconds)
    save_json(RESULTS / "serving.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
