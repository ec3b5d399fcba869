"""Make the README's screenshots (docs/compare.png, docs/methods.png) on request.

    .venv/bin/python docs/make_screenshots.py            # both
    .venv/bin/python docs/make_screenshots.py methods    # one

Starts the dashboard on a free port of 127.0.0.1 and drives Debian's Chromium
(/usr/bin/chromium) with Playwright, waits until each page has run and its
charts are drawn, and writes a full-page PNG. Tests never write tracked files;
this script is the one place that updates these two.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-sync", "--disable-component-update", "--no-first-run"]
# name -> (path, charts drawn once the page is ready)
SHOTS = {
    "compare": ("/compare?sample=coffee", 4),
    "methods": ("/methods?sample=coffee&rank=1", 2),
}
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
RUNNING = '[data-testid="stStatusWidget"], [data-stale="true"]'
WAIT_MS = 300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the dashboard exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the dashboard did not answer within {timeout_s} s")


def _wait_drawn(page, charts: int) -> None:
    page.wait_for_selector(IDLE, timeout=WAIT_MS)
    page.locator(".js-plotly-plot").nth(charts - 1).wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_function(f"() => !document.querySelector({RUNNING!r})", timeout=WAIT_MS)
    page.wait_for_selector(IDLE, timeout=WAIT_MS)


def main(names: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    unknown = [n for n in names if n not in SHOTS]
    if unknown:
        print(f"unknown screenshot {unknown[0]!r}; choose from {', '.join(SHOTS)}", file=sys.stderr)
        return 2
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SALIENCY_CONFIRM_ABOVE_S": "inf"}  # the ranking is part of the picture: no confirm box
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_healthy(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for name in names or list(SHOTS):
                    path, charts = SHOTS[name]
                    page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
                    page.goto(url + path)
                    _wait_drawn(page, charts)
                    out = REPO / "docs" / f"{name}.png"
                    page.screenshot(path=str(out), full_page=True)
                    print(f"wrote {out.relative_to(REPO)}")
                    page.context.close()
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
