"""``dlguide serve``: a real server on 127.0.0.1 in a subprocess, driven with httpx.

One server (``main``) serves tiny real runs of every input kind and is shared by most tests;
the queue, worker and timeout behaviours each start their own (marked slow). No test asserts
on a duration: waits are bounded loops on the server's own state (readyz, metrics).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import csv
import functools
import io
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import dlguide  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READY_WAIT_S = 180  # bound of the readiness loop (loading torch and the models on a busy machine)


# -- tiny real runs --------------------------------------------------------------------------------
def _reviews(folder: Path) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for name, n in (("train.csv", 60), ("test.csv", 20)):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in range(n):
                good = i % 2 == 1
                words = rng.choices(["the", "film", "was", "a", "plot"], k=4)
                words.append(rng.choice(["great", "fine"] if good else ["awful", "dull"]))
                writer.writerow([" ".join(words), "good" if good else "bad"])
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished runs (and one bundle) of every input kind, trained through the library."""
    from dlguide._export import export_run

    root = tmp_path_factory.mktemp("runs")
    quick = ["epochs=1", "limit_train_batches=4", "limit_eval_batches=2"]
    out = {
        "sine": dlguide.run_task("example.sine", out=root / "sine", overrides=["epochs=1"], progress="none"),
        "sine2": dlguide.run_task("example.sine", out=root / "sine2", overrides=["epochs=1", "seed=7"],
                                  progress="none"),
        "digits": dlguide.run_task("vision.classify", out=root / "digits", overrides=quick, progress="none"),
    }
    out["gan"] = dlguide.run_task("vision.gan", out=root / "gan", progress="none", overrides=[
        *quick, f"classifier={root / 'digits'}", "quality_samples=20", "g_features=8", "d_features=8",
        "latent_dim=8"])
    out["reviews"] = dlguide.run_task("nlp.classify", out=root / "reviews", progress="none", overrides=[
        "dataset=files", f"data_dir={_reviews(root / 'review-data')}", "epochs=1", "embedding_dim=8",
        "hidden_size=8", "max_length=12", "batch_size=16"])
    paths = {name: result.run_dir for name, result in out.items()}
    paths["bundle"] = export_run(paths["digits"], root / "digits-bundle", "safetensors").path
    return paths


# -- a server in a subprocess ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path, tmp: Path) -> None:
        self.url, self.proc, self.log, self.tmp = url, proc, log, tmp

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def serving(tmp: Path, *args: str):
    """``dlguide serve ARGS`` on a free port of 127.0.0.1, ready; stopped with SIGINT afterwards."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tmp").mkdir(exist_ok=True)
    port = free_port()
    log = tmp / f"serve-{port}.log"
    env = {**os.environ, "TMPDIR": str(tmp / "tmp")}
    env.pop("DLGUIDE_SERVE_TOKEN", None)
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "dlguide", "serve", *args, "--port", str(port)],
                                stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = Served(f"http://127.0.0.1:{port}", proc, log, tmp)
    try:
        deadline = time.monotonic() + READY_WAIT_S
        while True:
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{server.log_tail()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"not ready after {READY_WAIT_S} s:\n{server.log_tail()}"
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def scrape(client) -> list:
    """Every sample of a /metrics scrape as (name, labels, value)."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(answer.text)
            for s in family.samples]


def metric(samples: list, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(value for n, got, value in samples if n == name and labels.items() <= got.items())


def png(pixels) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def digit_pngs(n: int) -> list[bytes]:
    import numpy as np
    from sklearn.datasets import load_digits

    images = load_digits().images[-n:]
    return [png((image * 255 / 16).round().astype(np.uint8)) for image in images]


def b64(data: bytes, name: str = "x.png") -> dict:
    return {"b64": base64.b64encode(data).decode(), "filename": name}


@pytest.fixture(scope="module")
def main(runs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("main")
    with serving(tmp, f"sine={runs['sine']}", f"sine_r={runs['sine']}", f"digits={runs['digits']}",
                 f"gan={runs['gan']}", f"reviews={runs['reviews']}", f"drift_ok={runs['bundle']}",
                 f"drift_shift={runs['bundle']}", "--token", TOKEN, "--batch-timeout-ms", "50",
                 "--max-body-mb", "0.05") as server:
        yield server


@pytest.fixture
def client(main):
    with httpx.Client(base_url=main.url, headers=AUTH, timeout=60) as c:
        yield c


def predict_ok(client, model: str = "sine", inputs=(0.5,)) -> dict:
    answer = client.post(f"/v1/models/{model}/predict", json={"inputs": list(inputs)})
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- routes --------------------------------------------------------------------------------------------
def test_routes(client, runs):
    assert client.get("/healthz").json()["status"] == "alive"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"sine", "sine_r", "digits", "gan", "reviews", "drift_ok", "drift_shift"}
    assert models["sine"]["task"] == "example.sine" and models["sine"]["input_kind"] == "json"
    assert models["digits"]["input_kind"] == "file" and models["reviews"]["input_kind"] == "text"
    assert models["gan"]["writes_files"] is True and models["sine"]["runtime"] == "torch"
    assert all(len(m["version"]) == 12 for m in models.values())
    assert client.get("/v1/models/digits").json() == models["digits"]
    assert "/v1/models/{name}/predict" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text  # no CDN: works offline
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "dlguide serve" in page.text and "v1/models" in page.text


def test_predict_each_input_kind(client):
    sine = predict_ok(client, "sine", [0.5, 1.57])
    assert sine["model"] == "sine" and len(sine["predictions"]) == 2 and sine["predictions"][0]["input"] == 0.5
    assert sine["version"] == client.get("/v1/models/sine").json()["version"]

    images = digit_pngs(3)
    by_json = predict_ok(client, "digits", [b64(images[0], "a.png"), b64(images[1], "b.png")])
    assert [p["input"] for p in by_json["predictions"]] == ["a.png", "b.png"]
    top = by_json["predictions"][0]["top"]
    assert len(top) == 3 and all(0 <= c["probability"] <= 1 for c in top)
    assert by_json["predictions"][0]["label"] == top[0]["label"]
    files = [("file", ("one.png", images[0], "image/png")), ("file", ("two.png", images[2], "image/png"))]
    uploaded = client.post("/v1/models/digits/predict", files=files)
    assert uploaded.status_code == 200, uploaded.text
    assert [p["input"] for p in uploaded.json()["predictions"]] == ["one.png", "two.png"]
    assert uploaded.json()["predictions"][0]["top"] == top  # the same image, whichever way it came

    texts = predict_ok(client, "reviews", ["a great film", "dull plot"])["predictions"]
    assert {t["label"] for t in texts} <= {"good", "bad"} and texts[0]["input"] == "a great film"


def test_written_files_come_back_inline(client, main):
    from PIL import Image

    rows = predict_ok(client, "gan", [3, 4])["predictions"]
    assert [row["input"] for row in rows] == [3, 4]
    for row in rows:
        image = row["file"]
        assert image["media_type"] == "image/png" and image["filename"] == f"sample_seed{row['input']}.png"
        assert Image.open(io.BytesIO(base64.b64decode(image["b64"]))).size[0] > 1
    again = predict_ok(client, "gan", [3])["predictions"][0]["file"]["b64"]
    assert again == rows[0]["file"]["b64"]  # a seed always makes the same image
    assert not list((main.tmp / "tmp").glob("dlguide-result-*")), "the per-request folder was left behind"


# -- bad requests: a 4xx JSON error of one line, and the server keeps serving -------------------------------
def _bad_requests():
    too_big = {"inputs": [0.5] * 20000}
    return [
        ("malformed JSON", "sine", {"content": b'{"inputs": [0.5', "headers": {"Content-Type": "application/json"}},
         400, "not valid JSON"),
        ("a list body", "sine", {"json": [0.5]}, 422, "JSON object"),
        ("missing inputs", "sine", {"json": {"input": [0.5]}}, 422, "'input'"),
        ("no field", "sine", {"json": {}}, 422, "missing field 'inputs'"),
        ("inputs not a list", "sine", {"json": {"inputs": 0.5}}, 422, "must be a list"),
        ("inputs empty", "sine", {"json": {"inputs": []}}, 422, "empty"),
        ("not a number", "sine", {"json": {"inputs": ["abc"]}}, 422, "abc"),
        ("not an image", "digits", {"json": {"inputs": [b64(b"hello, not an image", "notes.txt")]}}, 422,
         "notes.txt"),
        ("file not an object", "digits", {"json": {"inputs": [7]}}, 422, "inputs[0] must be a file"),
        ("bad base64", "digits", {"json": {"inputs": [{"b64": "@@not base64@@", "filename": "x.png"}]}}, 400,
         "base64"),
        ("uploaded text file", "digits", {"files": {"file": ("notes.txt", b"plain text", "text/plain")}}, 422,
         "notes.txt"),
        ("multipart without a file", "digits",
         {"content": b'--b\r\nContent-Disposition: form-data; name="field"\r\n\r\nx\r\n--b--\r\n',
          "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 422, "no file"),
        ("empty text", "reviews", {"json": {"inputs": ["   "]}}, 422, "empty"),
        ("text not a string", "reviews", {"json": {"inputs": [{"text": "x"}]}}, 422, "must be a text"),
        ("bad seed", "gan", {"json": {"inputs": [-1]}}, 422, "seed"),
        ("files for a JSON model", "sine", {"files": {"file": ("a.png", b"x", "image/png")}}, 415, "JSON"),
        ("unknown content type", "sine", {"content": b"0.5", "headers": {"Content-Type": "text/plain"}}, 415,
         "text/plain"),
        ("unknown model", "sinus", {"json": {"inputs": [0.5]}}, 404, "did you mean 'sine'"),
        ("over the size limit", "sine", {"json": too_big}, 413, "--max-body-mb"),
        ("over the limit while read", "sine",
         {"content": iter([b'{"inputs": [' + b"0.5, " * 4000] * 5 + [b"0.5]}"]),
          "headers": {"Content-Type": "application/json"}}, 413, "--max-body-mb"),
    ]


@pytest.mark.parametrize(("why", "model", "request_kwargs", "status", "says"), _bad_requests(),
                         ids=[case[0] for case in _bad_requests()])
def test_bad_request(client, why, model, request_kwargs, status, says):
    answer = client.post(f"/v1/models/{model}/predict", **request_kwargs)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    if says:
        assert says in error
    predict_ok(client, "sine")  # the server keeps serving
    predict_ok(client, "digits", [b64(digit_pngs(1)[0])])


def test_unknown_routes_and_methods(client):
    assert client.get("/v2/nothing").status_code == 404 and "error" in client.get("/v2/nothing").json()
    answer = client.get("/v1/models/sine/predict")
    assert answer.status_code == 405 and "GET" in answer.json()["error"]
    answer = client.post("/predict", json={"inputs": [0.5]})
    assert answer.status_code == 400 and "sine" in answer.json()["error"] and "digits" in answer.json()["error"]
    assert client.get("/v1/models/nope").status_code == 404


def test_token_required_on_predict_and_reload(main, runs):
    with httpx.Client(base_url=main.url, timeout=30) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = anonymous.post("/v1/models/sine/predict", json={"inputs": [0.5]}, headers=headers)
            assert answer.status_code == 401 and "Bearer" in answer.json()["error"]
            answer = anonymous.post("/v1/models/sine_r/reload", json={"path": str(runs["sine2"])}, headers=headers)
            assert answer.status_code == 401
        assert anonymous.get("/v1/models").status_code == 200
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.post("/v1/models/sine/predict", json={"inputs": [0.5]}, headers=AUTH).status_code == 200


# -- batching, metrics, monitoring -----------------------------------------------------------------------
def test_concurrent_requests_are_batched(client):
    before = scrape(client)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda x: predict_ok(client, "sine", [x / 10]), range(16)))
    assert [a["predictions"][0]["input"] for a in answers] == pytest.approx([x / 10 for x in range(16)])
    after = scrape(client)
    batches = metric(after, "dlguide_batch_size_count", model="sine") - metric(before, "dlguide_batch_size_count",
                                                                              model="sine")
    samples = metric(after, "dlguide_batch_size_sum", model="sine") - metric(before, "dlguide_batch_size_sum",
                                                                            model="sine")
    assert samples == 16 and batches < 16, "16 concurrent requests ran as 16 batches of one"


def test_metrics(client):
    predict_ok(client, "sine")
    samples = scrape(client)
    route = "/v1/models/{name}/predict"
    assert metric(samples, "dlguide_requests_total", model="sine", route=route, status="200") >= 1
    assert metric(samples, "dlguide_request_duration_seconds_count", model="sine", route=route) >= 1
    assert metric(samples, "dlguide_samples_total", model="sine") >= 1
    version = client.get("/v1/models/sine").json()["version"]
    assert metric(samples, "dlguide_model_info", model="sine", version=version, task="example.sine") == 1
    assert any(n == "dlguide_queue_depth" and labels["model"] == "sine" for n, labels, _ in samples)
    assert metric(samples, "dlguide_process_resident_memory_bytes") > 0
    assert metric(samples, "dlguide_process_cpu_seconds") > 0
    assert metric(samples, "dlguide_workers") == 1


def test_monitor_sees_shifted_inputs(client):
    import numpy as np

    black = png(np.zeros((8, 8), dtype=np.uint8))
    predict_ok(client, "drift_ok", [b64(image) for image in digit_pngs(60)])
    predict_ok(client, "drift_shift", [b64(black)] * 60)
    ok, shift = (client.get(f"/v1/models/{name}/monitor").json() for name in ("drift_ok", "drift_shift"))
    assert ok["reference"] and ok["observed"] == 60 and shift["observed"] == 60
    assert shift["input"]["psi"] > 1 > ok["input"]["psi"]
    assert shift["drift"] is True
    samples = scrape(client)
    psi_ok = metric(samples, "dlguide_drift_psi", model="drift_ok", signal="input")
    psi_shift = metric(samples, "dlguide_drift_psi", model="drift_shift", signal="input")
    assert psi_shift > psi_ok and psi_shift == pytest.approx(shift["input"]["psi"], rel=1e-6)
    none = client.get("/v1/models/sine/monitor").json()  # served from a run directory: no reference
    assert none["reference"] is False and none["drift"] is None


# -- reloads ---------------------------------------------------------------------------------------------
def test_reload_under_load_fails_no_request(client, runs):
    old = client.get("/v1/models/sine_r").json()["version"]
    stop, seen, failures = threading.Event(), [], []

    def hammer():
        with httpx.Client(base_url=client.base_url, headers=AUTH, timeout=60) as own:
            while not stop.is_set():
                answer = own.post("/v1/models/sine_r/predict", json={"inputs": [0.25, 0.5]})
                if answer.status_code != 200:
                    failures.append(answer.text)
                else:
                    seen.append(answer.json()["version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        while len(seen) < 10 and not failures:
            time.sleep(0.05)
        answer = client.post("/v1/models/sine_r/reload", json={"path": str(runs["sine2"])})
        count = len(seen)
        while len(seen) < count + 10 and not failures:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert answer.status_code == 200, answer.text
    new = answer.json()["version"]
    assert answer.json()["previous"] == old and new != old
    assert not failures
    assert seen[0] == old and seen[-1] == new and set(seen) == {old, new}
    assert client.get("/v1/models/sine_r").json()["version"] == new
    assert client.get("/v1/models/sine").json()["version"] == old  # the other name was not touched
    samples = scrape(client)
    assert metric(samples, "dlguide_model_info", model="sine_r", version=new) == 1
    assert metric(samples, "dlguide_model_info", model="sine_r", version=old) == 0


def test_failed_reload_keeps_the_old_version(client, runs, tmp_path):
    before = client.get("/v1/models/sine").json()["version"]
    cases = [
        ({"path": str(runs["sine"].parent / "nothing-here")}, 422, "keeps version"),
        ({"path": str(runs["sine"] / "checkpoints")}, 422, "keeps version"),
        ({"path": str(tmp_path)}, 403, "--allowed-root"),
        ({"path": "/"}, 403, "outside"),
        ({"path": 3}, 422, "'path'"),
        ({"where": "x"}, 422, "unknown field"),
    ]
    for body, status, says in cases:
        answer = client.post("/v1/models/sine/reload", json=body)
        assert answer.status_code == status, answer.text
        assert says in answer.json()["error"]
        assert predict_ok(client, "sine")["version"] == before
    assert client.post("/v1/models/nope/reload", json={"path": str(runs["sine2"])}).status_code == 404


# -- an unexpected exception, in process -------------------------------------------------------------------
def test_unexpected_error_is_a_500_and_the_server_goes_on(runs, tmp_path, monkeypatch):
    from prometheus_client import values
    from starlette.testclient import TestClient

    from dlguide._export import load_model
    from dlguide._serve import ServeSettings
    from dlguide._serve_http import create_app

    (tmp_path / "metrics").mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # put back what the server replaces
    loaded = load_model(runs["sine"], name="sine")
    real_step = loaded.task.predict_step

    def predict_step(batch):
        if bool((batch == 13).any()):
            raise RuntimeError("thirteen is unlucky")
        return real_step(batch)

    loaded.task.predict_step = predict_step
    settings = ServeSettings(models=[("sine", str(runs["sine"]))], state_dir=str(tmp_path),
                             allowed_roots=[str(runs["sine"].parent)])
    with TestClient(create_app(settings, {"sine": loaded})) as app:
        answer = app.post("/predict", json={"inputs": [13]})
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal error while predicting with 'sine': RuntimeError: thirteen is "
                                          "unlucky"}
        assert app.post("/predict", json={"inputs": [0.5]}).status_code == 200


# -- the command line ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "says"), [
    (["/no/such/run"], "not found"),
    (["RUN", "--workers", "0"], "--workers must be >= 1"),
    (["RUN", "RUN"], "two models would be served as"),
    (["bad name=RUN"], "'bad name' is not a usable model name"),
    (["RUN", "--max-body-mb", "0"], "--max-body-mb must be > 0"),
    (["RUN", "--allowed-root", "/no/such/folder"], "--allowed-root"),
    (["RUN", "--runtime", "onnx"], "bundle"),
])
def test_cli_usage_errors(runs, capsys, args, says):
    from dlguide._cli import main as cli

    code = cli(["serve", *[a.replace("RUN", str(runs["sine"])) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_cli_port_in_use(runs, capsys):
    from dlguide._cli import main as cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = cli(["serve", str(runs["sine"]), "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and "cannot listen on 127.0.0.1" in err


def test_token_from_the_environment(runs, monkeypatch):
    import argparse

    from dlguide._serve import add_serve_command, settings_from_args

    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers())
    monkeypatch.setenv("DLGUIDE_SERVE_TOKEN", "from-env")
    settings = settings_from_args(parser.parse_args(["serve", str(runs["sine"])]))
    assert settings.token == "from-env" and settings.host == "127.0.0.1"
    assert settings.allowed_roots == [str(runs["sine"].parent.resolve())]
    assert settings_from_args(parser.parse_args(["serve", str(runs["sine"]), "--token", "given"])).token == "given"


def test_missing_extra_is_one_line(runs, monkeypatch, capsys):
    import importlib.util

    from dlguide._cli import main as cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert cli(["serve", str(runs["sine"])]) == 2
    assert capsys.readouterr().err.strip() == ("dlguide: error: dlguide serve needs uvicorn: "
                                               "pip install 'dlguide-core[serve]'")


# -- servers of their own -----------------------------------------------------------------------------------
def test_full_queue_is_503_and_late_answer_504(runs, tmp_path, monkeypatch):
    """In process, with a batch held on the model's thread (no timing assumed): a request that
    finds the queue full is a 503 with Retry-After, one still queued past its deadline a 504,
    and the server goes on."""
    from prometheus_client import values
    from starlette.testclient import TestClient

    from dlguide._export import load_model
    from dlguide._serve import ServeSettings
    from dlguide._serve_http import create_app

    (tmp_path / "metrics").mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # put back what the server replaces
    loaded = load_model(runs["sine"], name="sine")
    real_step = loaded.task.predict_step
    holding, release = threading.Event(), threading.Event()

    def predict_step(batch):
        if bool((batch == 13).any()):  # holds the model's one thread until the test lets go
            holding.set()
            release.wait(60)
        return real_step(batch)

    loaded.task.predict_step = predict_step
    settings = ServeSettings(models=[("sine", str(runs["sine"]))], state_dir=str(tmp_path), max_queue=1,
                             request_timeout_s=2, allowed_roots=[str(runs["sine"].parent)])
    with TestClient(create_app(settings, {"sine": loaded})) as app, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = pool.submit(app.post, "/predict", json={"inputs": [13]})
        assert holding.wait(60), "the held batch never started"
        queued = pool.submit(app.post, "/predict", json={"inputs": [0.5]})  # waits behind the held batch
        deadline = time.monotonic() + 60
        while metric(scrape(app), "dlguide_queue_depth", model="sine") < 1:
            assert time.monotonic() < deadline and not queued.done(), "the second request never queued"
            time.sleep(0.02)
        full = app.post("/predict", json={"inputs": [0.25]})
        assert full.status_code == 503 and full.headers["Retry-After"] == "1"
        assert "max-queue" in full.json()["error"]
        late = queued.result(timeout=60)  # its 2 s pass while the batch is held
        assert late.status_code == 504 and "timeout" in late.json()["error"]
        release.set()
        assert held.result(timeout=60).status_code == 504  # held past its own 2 s as well
        assert app.post("/predict", json={"inputs": [0.5]}).status_code == 200
        assert metric(scrape(app), "dlguide_queue_depth", model="sine") == 0


@pytest.mark.slow
def test_two_workers_sum_metrics_and_follow_reloads(runs, tmp_path):
    with serving(tmp_path, str(runs["sine"]), "--workers", "2", "--batch-timeout-ms", "20") as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/readyz").json()["workers_ready"] == 2
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            def one(x):
                with httpx.Client(base_url=server.url, timeout=60) as own:  # own connections: both workers
                    return own.post("/predict", json={"inputs": [x]}).status_code
            assert list(pool.map(one, range(40))) == [200] * 40
        totals, deadline = {}, time.monotonic() + 60
        while len(totals) < 2:  # a scrape of either worker sums over both
            assert time.monotonic() < deadline, "the same worker answered every connection"
            with httpx.Client(base_url=server.url, timeout=60) as own:  # one connection: one worker
                worker = own.get("/healthz").json()["worker"]
                samples = scrape(own)
            requests = metric(samples, "dlguide_requests_total", model="sine", route="/predict", status="200")
            totals[worker] = (requests, metric(samples, "dlguide_samples_total", model="sine"),
                              metric(samples, "dlguide_workers"))
        assert list(totals.values()) == [(40, 40, 2)] * 2

        answer = client.post("/v1/models/sine/reload", json={"path": str(runs["sine2"])})
        assert answer.status_code == 200, answer.text
        new = answer.json()["version"]
        deadline, streak = time.monotonic() + 60, 0
        while streak < 10:  # fresh connections land on either worker: each must have swapped
            assert time.monotonic() < deadline, "a worker did not follow the reload"
            with httpx.Client(base_url=server.url, timeout=60) as own:
                answer = own.post("/predict", json={"inputs": [0.5]})
            assert answer.status_code == 200
            streak = streak + 1 if answer.json()["version"] == new else 0
    assert server.proc.returncode == 0, server.log_tail()
    assert not list((tmp_path / "tmp").glob("dlguide-serve-*")), "the serve's temporary folder was left behind"


@pytest.mark.slow
def test_onnx_runtime_serves_a_bundle(runs, tmp_path):
    pytest.importorskip("onnxruntime")
    from dlguide._export import export_run

    bundle = export_run(runs["digits"], tmp_path / "digits-onnx", "safetensors,onnx").path
    images = digit_pngs(5)
    with serving(tmp_path / "server", str(bundle), "--runtime", "onnx") as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        (model,) = client.get("/v1/models").json()["models"]
        assert model["runtime"] == "onnx" and model["name"] == "digits-onnx"
        answer = client.post("/predict", json={"inputs": [b64(image) for image in images]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 5
        assert metric(scrape(client), "dlguide_model_info", model="digits-onnx", runtime="onnx") == 1
