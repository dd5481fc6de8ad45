"""Headless Chromium for tests that look at a page as a person would: load a URL, wait, take a
screenshot (Chrome DevTools protocol over the `websockets` client that mujoco already pulls in).

`find_chromium()` says where the browser is, or None (Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

#: Flags for a browser with no network chatter, no sandbox (root in a container), no GPU.
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
)


def _child_setup(nice: int, cpus: set[int] | None) -> None:  # in the browser, fork to exec
    import ctypes
    import os
    import signal

    os.nice(nice)
    if cpus:
        os.sched_setaffinity(0, cpus)
    # the browser ends with the process that started it, even if that one is killed
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class BrowserError(RuntimeError):
    """The browser could not start or load the page; the message says why."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    url: str,
    out: Path,
    wait_s: float,
    size: tuple[int, int] = (1600, 1000),
    nice: int = 0,
    cpus: set[int] | None = None,
) -> Path:
    """Open `url` in a fresh headless Chromium, wait `wait_s` seconds, save a PNG to `out`.
    nice: the browser's niceness (a benchmark keeps it from competing with the robot).
    cpus: the cores it may run on (None: any). Niceness does not keep a browser's kernel work
    (page faults, unmapping) off a core: on a kernel without preemption that work stalls even
    a SCHED_FIFO control loop on the same core for tens of ms, so keep it off System 1's."""

    from websockets.sync.client import connect

    exe = find_chromium()
    if exe is None:
        raise BrowserError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="dualsys-chromium-") as profile:
        proc = subprocess.Popen(
            [
                exe,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={size[0]},{size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _child_setup(nice, cpus),
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            end = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.poll() is not None or time.monotonic() > end:
                    raise BrowserError(f"chromium did not start (exit {proc.poll()})")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [p for p in json.load(r) if p.get("type") == "page"]
            if not pages:
                raise BrowserError("chromium has no page to drive")
            with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
                ids = iter(range(1, 1 << 30))

                def call(method: str, **params) -> dict:
                    i = next(ids)
                    ws.send(json.dumps({"id": i, "method": method, "params": params}))
                    while True:
                        reply = json.loads(ws.recv(timeout=60))
                        if reply.get("id") == i:
                            if "error" in reply:
                                raise BrowserError(f"{method}: {reply['error']}")
                            return reply.get("result", {})

                call(
                    "Emulation.setDeviceMetricsOverride",
                    width=size[0],
                    height=size[1],
                    deviceScaleFactor=1,
                    mobile=False,
                )
                call("Page.navigate", url=url)
                time.sleep(wait_s)
                png = call("Page.captureScreenshot", format="png")["data"]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(base64.b64decode(png))
            return out
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
