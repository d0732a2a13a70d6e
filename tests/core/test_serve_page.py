"""The page at ``/`` of ``dlguide serve``, in Debian's headless chromium.

The browser is driven over the DevTools protocol through ``--remote-debugging-pipe`` (JSON
messages ending in a NUL byte on file descriptors 3 and 4), so no driver package is needed:
the test picks a model, uploads an image or types a value, presses Predict and reads what the
page shows.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import dlguide  # noqa: E402
from test_serve import digit_pngs, serving  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WAIT_S = 60  # bound of each wait for the page


class Browser:
    """Headless chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, profile, log) -> None:
        # the pipe is the child's fds 3 (commands in) and 4 (answers out)
        self.proc = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', binary, "--headless", "--no-sandbox",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self.buffer = b""
        self.last_id = 0
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, *, page: bool = True) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        if page and self.session:
            message["sessionId"] = self.session
        self.proc.stdin.write(json.dumps(message).encode() + b"\0")
        self.proc.stdin.flush()
        deadline = time.monotonic() + WAIT_S
        while True:
            while b"\0" not in self.buffer:
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, f"chromium did not answer {method}"
                ready, _, _ = select.select([self.proc.stdout], [], [], left)
                if ready:
                    self.buffer += os.read(self.proc.stdout.fileno(), 1 << 16)
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.last_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": url}, page=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 page=False)["sessionId"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def choose(self, model: str) -> None:
        self.js(f"(() => {{ const m = document.getElementById('model'); m.value = {json.dumps(model)};"
                "m.dispatchEvent(new Event('change')); })()")

    def wait_for(self, expression: str):
        deadline = time.monotonic() + WAIT_S
        while not (value := self.js(expression)):
            assert time.monotonic() < deadline, f"the page never showed {expression}; it shows:\n" + \
                str(self.js("document.body.innerText"))
            time.sleep(0.1)
        return value

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    sine = dlguide.run_task("example.sine", out=root / "sine", overrides=["epochs=1"], progress="none")
    digits = dlguide.run_task("vision.classify", out=root / "digits", progress="none",
                              overrides=["epochs=1", "limit_train_batches=4", "limit_eval_batches=2"])
    return {"sine": sine.run_dir, "digits": digits.run_dir}


@pytest.mark.slow
def test_page_shows_predictions(runs, tmp_path):
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium package: apt-get install -y chromium")
    image = tmp_path / "seven.png"
    image.write_bytes(digit_pngs(1)[0])
    with serving(tmp_path / "server", str(runs["digits"]), str(runs["sine"])) as server, \
            open(tmp_path / "chromium.log", "w") as log:
        browser = Browser(CHROMIUM, tmp_path / "profile", log)
        try:
            browser.open(server.url + "/")
            browser.wait_for("document.querySelectorAll('#model option').length === 2")

            # an image upload: the top classes as bars
            browser.choose("digits")
            assert browser.js("document.getElementById('file-input').hidden") is False
            document = browser.send("DOM.getDocument")["root"]["nodeId"]
            files = browser.send("DOM.querySelector", {"nodeId": document, "selector": "#files"})["nodeId"]
            browser.send("DOM.setFileInputFiles", {"nodeId": files, "files": [str(image)]})
            browser.js("document.getElementById('predict').click()")
            assert browser.wait_for("document.querySelectorAll('.bar-row').length") == 3
            shown = browser.js("document.getElementById('results').innerText")
            assert "seven.png" in shown and "digits version" in browser.js(
                "document.getElementById('status').innerText")

            # a value: the result's fields as a table
            browser.choose("sine")
            browser.js("document.getElementById('value').value = '0.5'")
            browser.js("document.getElementById('predict').click()")
            browser.wait_for("document.getElementById('results').innerText.includes('sin(x)')")
            assert "0.4794" in browser.js("document.getElementById('results').innerText")

            # a refused input: the server's one-line error
            browser.js("document.getElementById('value').value = 'abc'")
            browser.js("document.getElementById('predict').click()")
            error = browser.wait_for("document.getElementById('error').innerText")
            assert error.startswith("422") and "abc" in error
        finally:
            browser.close()
