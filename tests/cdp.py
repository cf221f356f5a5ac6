"""A headless Chromium driven through the Chrome DevTools Protocol over a pipe (``--remote-debugging-pipe``:
JSON messages ending in a NUL byte, on file descriptors 3 and 4 of the browser), so a test needs no
driver binary, no WebSocket package and no open port. Debian's ``chromium`` package is installed on
demand where the tests run as root (CI); elsewhere the browser tests are skipped with the command to run.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

# The machine may have no network: nothing that would phone home, and no sandbox (root in a container).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def chromium() -> str:
    """The browser's path; installs Debian's package when missing and allowed to, else skips the test."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("needs Chromium: `apt-get install -y chromium` (Debian, as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return shutil.which("chromium")


class Browser:
    """One headless browser with a fresh profile; :meth:`page` opens a tab, the other methods act on one."""

    def __init__(self, profile_dir: Path, width: int = 1600, height: int = 1000) -> None:
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()

        def wire() -> None:  # in the child, before exec: the browser reads fd 3 and writes fd 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self._proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=wire,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._next, self._buffer, self.size = 0, b"", (width, height)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params: Any) -> dict:
        """Send one command and return its result; events that arrive meanwhile are dropped."""
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._in, selectors.EVENT_READ)
            while True:
                while b"\0" in self._buffer:
                    raw, self._buffer = self._buffer.split(b"\0", 1)
                    reply = json.loads(raw)
                    if reply.get("id") == self._next:
                        if "error" in reply:
                            raise RuntimeError(f"{method}: {reply['error']}")
                        return reply.get("result", {})
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError(f"{method}: no answer within {timeout} s")
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{method}: the browser exited ({self._proc.poll()})")
                self._buffer += chunk

    def page(self, url: str) -> str:
        """Open ``url`` in a new tab; returns the tab's session id."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        width, height = self.size
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", session, **metrics)
        self.call("Page.navigate", session, url=url)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, session: str, expression: str, timeout: float = 60) -> Any:
        """Poll ``expression`` in the page until it is truthy; returns its value, or fails with the page's text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(session, expression)
            if value:
                return value
            time.sleep(0.5)
        text = self.evaluate(session, "document.body ? document.body.innerText.slice(0, 3000) : ''")
        raise AssertionError(f"not true within {timeout} s: {expression}\nlocation: {self.location(session)}\n{text}")

    def location(self, session: str) -> str:
        return self.evaluate(session, "location.href")

    def screenshot(self, session: str, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._in)
        os.close(self._out)
