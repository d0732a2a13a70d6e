"""The page at ``/`` of ``dlguide serve``, in Debian's headless chromium (tests/core/chromium.py):
the test picks a model, uploads an image or types a value, presses Predict and reads what the
page shows.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import dlguide  # noqa: E402
from chromium import CHROMIUM, WAIT_S, Browser  # noqa: E402
from test_serve import digit_pngs, serving  # noqa: E402

class PageBrowser(Browser):
    def choose(self, model: str) -> None:
        self.js(f"(() => {{ const m = document.getElementById('model'); m.value = {json.dumps(model)};"
                "m.dispatchEvent(new Event('change')); })()")


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
        browser = PageBrowser(CHROMIUM, tmp_path / "profile", log)
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
