"""Headless Chromium driven over its DevTools protocol: a page that needs a login cookie, rendered and saved.

``chromium --screenshot`` cannot log in. Here Chromium starts with a DevTools
port, the test sets the session cookie the app's own login would set, opens
the page, waits until its text shows what the test expects (single-page apps
render after load), and saves a PNG.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000")


class _DevTools:
    def __init__(self, url: str) -> None:
        self.socket = connect(url, max_size=64 * 1024 * 1024)
        self.next_id = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:  # events arrive in between; the answer carries our id
            answer = json.loads(self.socket.recv(timeout=60))
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})  # type: ignore[no-any-return]


def render_page(
    url: str,
    screenshot: Path,
    *,
    expect: str,
    cookie: dict[str, str] | None = None,
    local_storage: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    until: str | None = None,
    element: str | None = None,
) -> str:
    """Open ``url`` (with ``cookie`` and ``local_storage`` set for its origin), wait for ``expect``, save a PNG.

    ``headers`` go with every request of the page (a basic-auth ``Authorization``, as
    the browser's own sign-in dialog would send it). ``until``, a JavaScript expression,
    must also be true before the page counts as rendered: text can show before a script
    has drawn it (a diagram's source is text too). ``element``, a CSS selector, saves only
    that element, wherever it is on the page, instead of the window.

    Returns the page's text. Raises TimeoutError when ``expect`` never shows.
    """
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (make system-deps)"
    # Chromium's helpers may still write to the profile as it exits: leftovers are no error.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [binary, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            endpoint = ""
            while not endpoint:
                line = proc.stderr.readline()
                assert line, "chromium exited before its DevTools endpoint was printed"
                if "DevTools listening on " in line:
                    endpoint = line.split("DevTools listening on ", 1)[1].strip()
            tools = _DevTools(endpoint)
            target = tools.call("Target.createTarget", url="about:blank")["targetId"]
            session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            tools.call("Network.enable", session)
            if cookie:
                tools.call("Network.setCookie", session, url=url, **cookie)
            if headers:
                tools.call("Network.setExtraHTTPHeaders", session, headers=headers)
            tools.call("Page.enable", session)
            if local_storage:  # an app's stored preferences: set on its origin before it loads
                origin = "/".join(url.split("/", 3)[:3])
                tools.call("Page.navigate", session, url=f"{origin}/robots.txt")
                time.sleep(1)
                for key, value in local_storage.items():
                    script = f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)})"
                    tools.call("Runtime.evaluate", session, expression=script)
            tools.call("Page.navigate", session, url=url)
            deadline, text, ready = time.monotonic() + 60, "", until is None
            while expect not in text or not ready:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} never showed {expect!r} (until={until!r}); it shows: {text[:2000]!r}")
                time.sleep(0.5)
                result = tools.call("Runtime.evaluate", session, expression="document.body.innerText")
                # One space for any run of white space: UIs put no-break spaces inside labels ("@\xa0champion").
                text = re.sub(r"\s+", " ", str(result.get("result", {}).get("value", "")))
                if until is not None:
                    check = tools.call("Runtime.evaluate", session, expression=f"Boolean({until})")
                    ready = check.get("result", {}).get("value") is True
            time.sleep(2)  # let the page finish painting (graphs lay out after their text appears)
            clip: dict[str, Any] = {}
            if element is not None:
                box = f"JSON.stringify(document.querySelector({json.dumps(element)}).getBoundingClientRect())"
                rect = json.loads(tools.call("Runtime.evaluate", session, expression=box)["result"]["value"])
                scroll = tools.call("Runtime.evaluate", session, expression="[scrollX, scrollY]", returnByValue=True)
                left, top = scroll["result"]["value"]
                area = {"x": rect["x"] + left, "y": rect["y"] + top, "width": rect["width"], "height": rect["height"]}
                clip = {"clip": {**area, "scale": 1}, "captureBeyondViewport": True}
            shot = tools.call("Page.captureScreenshot", session, format="png", **clip)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            tools.socket.close()
            return text
        finally:
            proc.terminate()
            proc.wait(timeout=30)
