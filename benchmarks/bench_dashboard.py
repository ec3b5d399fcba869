"""The dashboard's own speed, measured in a real browser against a real server.

Run from the repository root (needs Debian's chromium and the dev requirements)::

    .venv/bin/python benchmarks/bench_dashboard.py [--uploads 50]

Reports:
* cold start to first heatmap: from launching ``streamlit run dashboard.py``
  to the Saliency page showing its heatmap (model load and first
  computation included);
* upload to heatmap: from handing a new image to the uploader to its map
  being on the page (median over the uploads);
* display change: script time of a rerun that only changes the colour map
  (measured with AppTest, in-process, after the map is cached);
* server memory (RSS) after N different uploads.

``--methods-page`` measures the Methods page instead (AppTest, in-process, the
embedded model on the CPU, the model loaded before the clock starts)::

    .venv/bin/python benchmarks/bench_dashboard.py --methods-page [--reps 3]

* the fast methods' grid (gradient, gradient × input, guided backprop,
  Grad-CAM; score and loss) from a cold cache: the script time of a new
  session opening the page with every method's maps dropped first (goal < 3 s);
* SmoothGrad and Integrated Gradients alone at their defaults, the same way
  (goal < 10 s each), with the engine's own time for them
  (``MethodRun.seconds``) so the page's overhead shows;
* a second visit (everything cached).
Medians over ``--reps``, with the load average before and after.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-sync", "--disable-component-update", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def photo(i: int, megapixels: float = 0.0) -> tuple[str, bytes]:
    """A different photo per i: a crop of a sample photo, shifted and tinted, as (file name, bytes).

    At its own size it is a PNG; with ``megapixels`` it is scaled up to about
    that many pixels and saved as a JPEG (quality 90), like a camera's photo.
    """
    from saliency_core.inputs.samples import sample_images

    samples = sample_images()
    img = np.asarray(samples[i % len(samples)].image).astype(np.float32)
    h, w = img.shape[:2]
    rng = np.random.default_rng(i)
    top, left = rng.integers(0, max(1, h // 4)), rng.integers(0, max(1, w // 4))
    crop = img[top:top + 3 * h // 4, left:left + 3 * w // 4] * rng.uniform(0.8, 1.2, 3)
    image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    if not megapixels:
        image.save(buf, format="PNG")
        return f"upload_{i:03d}.png", buf.getvalue()
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    image.save(buf, format="JPEG", quality=90)
    return f"upload_{i:03d}.jpg", buf.getvalue()


def hwm_mb(pid: int) -> float:
    """Peak resident memory of a process so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def display_change_seconds() -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/saliency.py").run()
    times = []
    for cmap in ["viridis", "hot", "gray", "inferno", "hot", "viridis", "gray"]:
        start = time.perf_counter()
        at.selectbox(key="colorscale").set_value(cmap).run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


GOALS_S = {"fast grid": 3.0, "smoothgrad": 10.0, "integrated_gradients": 10.0}


def methods_page_seconds(methods: str, cold: bool) -> tuple[float, float]:
    """(script time of a new session opening the Methods page with ``methods``, engine seconds of its methods)."""
    from streamlit.testing.v1 import AppTest

    from pages.ui import caches

    if cold:
        caches.method_runs().clear()
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
    at.query_params.update({"methods": methods})
    at.switch_page("pages/methods.py")
    start = time.perf_counter()
    at.run()
    took = time.perf_counter() - start
    if at.exception or at.error:
        raise RuntimeError(f"the Methods page failed: {[e.value for e in (*at.exception, *at.error)]}")
    used = at.dataframe[0].value
    return took, float(used["seconds"].sum())


def methods_page(reps: int) -> int:
    """The Methods page's timings (see the module's docstring)."""
    import logging

    import pytest

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # AppTest's "no runtime" warnings
    from pages.ui.navigation import entry_script_for_every_run
    from saliency_core.methods.registry import shown_by_default

    os.environ.setdefault("SALIENCY_DEVICE", "cpu")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as dashboard.py does on a server
    with pytest.MonkeyPatch.context() as mp:
        entry_script_for_every_run(mp)  # every run goes through dashboard.py, as on a server
        print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
        methods_page_seconds("gradient", cold=True)  # warm-up: torch, the model, the sample's crop and gradient
        cases = {"fast grid": ",".join(shown_by_default()), "smoothgrad": "smoothgrad",
                 "integrated_gradients": "integrated_gradients"}
        rows = {name: [methods_page_seconds(m, cold=True) for _ in range(reps)] for name, m in cases.items()}
        warm = [methods_page_seconds(cases["fast grid"], cold=False)[0] for _ in range(reps)]
        after = os.getloadavg()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"load average after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    print(f"| case | page, cold (median of {reps}) | min | max | engine | page / engine | goal | met |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        page = statistics.median(r[0] for r in runs)
        engine = statistics.median(r[1] for r in runs)
        print(f"| {name} | {page:.2f} s | {min(r[0] for r in runs):.2f} s | {max(r[0] for r in runs):.2f} s | "
              f"{engine:.2f} s | {page / engine:.2f} | < {GOALS_S[name]:g} s | "
              f"{'yes' if page < GOALS_S[name] else 'no'} |")
    print(f"second visit of the fast grid (all cached): median {statistics.median(warm) * 1000:.0f} ms")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods-page", action="store_true",
                    help="time the Methods page (fast grid, SmoothGrad, Integrated Gradients) instead")
    ap.add_argument("--reps", type=int, default=3, help="--methods-page: timings per case")
    ap.add_argument("--uploads", type=int, default=50)
    ap.add_argument("--megapixels", type=float, default=0.0,
                    help="scale each uploaded photo up to about this many megapixels (a JPEG); 0: small PNGs")
    ap.add_argument("--skip-display", action="store_true", help="leave out the display-change timing")
    args = ap.parse_args()
    if args.methods_page:
        return methods_page(args.reps)
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, SALIENCY_UPLOAD_DIR=tempfile.mkdtemp(prefix="bench-uploads-"))
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        # The browser is up before the clock starts: a user's browser already runs.
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        start = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port",
                                   str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    if urllib.request.urlopen(f"{base}/_stcore/health", timeout=1).read() == b"ok":
                        break
                except OSError:
                    time.sleep(0.05)
            health = time.perf_counter() - start
            page.goto(f"{base}/saliency")
            page.wait_for_selector("text=crop of Coffee", timeout=120_000)
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
            cold = time.perf_counter() - start
            rss_start = rss_mb(server.pid)
            upload_times = []
            sizes = []
            for i in range(args.uploads):
                name, data = photo(i, args.megapixels)
                sizes.append(len(data))
                t0 = time.perf_counter()
                page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]',
                                     files=[{"name": name, "mimeType": "image/jpeg" if name.endswith(".jpg")
                                             else "image/png", "buffer": data}])
                page.wait_for_selector(f"text=crop of {name}", timeout=120_000)
                upload_times.append(time.perf_counter() - t0)
            rss_end, peak = rss_mb(server.pid), hwm_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
            browser.close()
    display = None if args.skip_display else display_change_seconds()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"cold start to first heatmap: {cold:.2f} s (server answering after {health:.2f} s)")
    print(f"upload to heatmap: median {statistics.median(upload_times):.3f} s, "
          f"max {max(upload_times):.3f} s over {len(upload_times)} uploads")
    if display is not None:
        print(f"display change (colour map), script time: median {display * 1000:.0f} ms")
    what = f"{args.megapixels:g}-megapixel JPEGs" if args.megapixels else "small PNGs"
    print(f"server RSS: {rss_start:.0f} MB after the first heatmap, {rss_end:.0f} MB after {args.uploads} uploads "
          f"of {what} (median {statistics.median(sizes) / 1e6:.1f} MB each); peak {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
