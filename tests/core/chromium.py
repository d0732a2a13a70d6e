"""Debian's headless chromium driven over the DevTools protocol, for the tests of served and
written pages.

The browser is spoken to through ``--remote-debugging-pipe`` (JSON messages ending in a NUL
byte on file descriptors 3 and 4), so no driver package is needed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time

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
