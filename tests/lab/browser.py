"""Headless Chromium driven over its DevTools pipe, with no network at all: pages load, get clicked, and are read.

Chromium runs in a fresh, empty network namespace (``unshare -n``), so a page
that needed anything from the internet (a CDN's plotly.js) could not draw.
It is driven through ``--remote-debugging-pipe`` (the DevTools protocol as
NUL-terminated JSON on file descriptors 3 and 4): no port is opened, and a
click is a real mouse press and release at an element's place on the page.
Every console message, uncaught exception and failed load the page causes is
kept in :attr:`Page.console`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(Exception):
    """A DevTools command that failed, or a browser that stopped answering."""


class Browser:
    """One headless Chromium without network; use it as a context manager."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000) -> None:
        assert CHROMIUM is not None, "chromium is not installed (make deps installs it)"
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        argv = [
            "bash",
            "-c",
            # Chromium reads commands on fd 3 and answers on fd 4.
            'exec 3<&"$0" 4>&"$1"; shift; exec "$@"',
            str(to_chrome_r),
            str(from_chrome_w),
            "unshare",
            "-n",
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--window-size={width},{height}",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            argv,
            pass_fds=(to_chrome_r, from_chrome_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the browser and every process it started (its session's group)."""
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str = "", timeout: float = 30) -> Any:
        """Send a DevTools command and return its result; raises BrowserError on an error or no answer."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        want = self._id
        reply = self._next(lambda m: m.get("id") == want, timeout)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _next(self, match: Any, timeout: float) -> dict[str, Any]:
        """_next reads messages until one matches, keeping the events it passes; deadline ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                m = json.loads(raw)
                if match(m):
                    return m
                self._events.append(m)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer from chromium in {timeout} s")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise BrowserError("chromium closed its pipe")
                self._buf += chunk

    def open(self, url: str, timeout: float = 60) -> Page:
        """Load url in a new tab and return it once its load event fired."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", {"url": url}, session)
        self._next(lambda m: m.get("sessionId") == session and m.get("method") == "Page.loadEventFired", timeout)
        return page

    def events(self, session: str) -> list[dict[str, Any]]:
        """Return (and forget) the events of a tab received so far."""
        mine = [e for e in self._events if e.get("sessionId") == session]
        self._events = [e for e in self._events if e.get("sessionId") != session]
        return mine


class Page:
    """An open tab: evaluate script in it, click its elements, read what it logged."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self._console: list[str] = []

    @property
    def console(self) -> list[str]:
        """Lists what the page logged, threw or failed to load, as ``level: text`` lines."""
        for e in self.browser.events(self.session):
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                self._console.append(f"{p.get('type')}: {text}")
            elif e.get("method") == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                self._console.append(f"exception: {details.get('exception', {}).get('description', details)}")
            elif e.get("method") == "Log.entryAdded":
                entry = p.get("entry", {})
                self._console.append(f"{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".rstrip())
        return list(self._console)

    def eval(self, expression: str) -> Any:
        """Return the value of a script expression (awaited if a promise); raises BrowserError if it throws."""
        r = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session,
        )
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Evaluate expression until it is truthy and return it; raises BrowserError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still false after {timeout} s: {expression[:120]}")
            time.sleep(0.05)  # polling interval while the page draws, not a synchronisation

    def click(self, selector: str) -> None:
        """Press and releases the left mouse button on the middle of the element selector finds."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.browser.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
                self.session,
            )


PLOTS = """[...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
  title: gd._fullLayout.title.text,
  traces: gd._fullData.map((t, i) => {
    // Matched by the trace its SVG group is bound to: a hidden trace (legendonly) draws no group.
    const layer = [...gd.querySelectorAll('.scatterlayer .trace')].find(l => l.__data__ && l.__data__[0] && l.__data__[0].trace && l.__data__[0].trace.index === t.index);
    return {name: t.name, x: Array.from(t.x), y: Array.from(t.y), yaxis: t.yaxis, mode: t.mode,
            symbols: t.marker ? [].concat(t.marker.symbol) : [],
            points: layer ? layer.querySelectorAll('path.point').length : 0,
            line: layer && layer.querySelector('path.js-line') ? layer.querySelector('path.js-line').getAttribute('d') : ''};
  }),
  axes: Object.keys(gd._fullLayout).filter(k => /^yaxis[0-9]*$/.test(k)).sort(),
}))"""
"""PLOTS reads back every chart of a page: the series plotly drew (its full data) and the SVG it drew them as."""

DRAWN = "document.querySelectorAll('.js-plotly-plot').length > 0 && [...document.querySelectorAll('.js-plotly-plot')].every(gd => gd._fullLayout && gd.querySelector('.main-svg'))"


def problems(page: Page) -> list[str]:
    """Return the page's console lines that are errors or warnings (a failed load is one)."""
    return [line for line in page.console if not line.startswith(("verbose:", "info:", "debug:"))]
