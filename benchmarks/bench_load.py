"""Many users at once: Chromium sessions uploading different photos to the Saliency page at the same time.

Run from the repository root (needs Debian's chromium and the dev requirements), on an otherwise idle
machine::

    .venv/bin/python benchmarks/bench_load.py [--sessions 1 4 8] [--faithfulness 8] [--slots 1 8]

For each number of sessions: that many browser contexts open the Saliency page at once and wait until
it has settled (the sample's heatmap drawn, no script running: a user looking at the page), then all
upload a different photo at once. Reported per round: the median, p95 and max time from the upload to
its heatmap drawn (the figure's data replaced and laid out by Plotly), whether every map shown equals
``saliency_core.evaluation.analysis.analyse`` of that photo (read back from the page's Plotly figure, after every
session is done), the server's side from its timing log (``SALIENCY_TIMING_LOG``: the script run from
its start to the figure handed over, and each map's queue wait and computation), and how long opening
the page took with that many sessions opening it at once. Then ``--faithfulness`` sessions open the Faithfulness page
for their photo at once. The server's resident memory is sampled every 0.2 s throughout (peak reported).
The browsers share the machine's cores with the server, so the CPU seconds of each are reported too;
``--nice-browsers`` runs them at the lowest CPU priority, which shows the server as users on their own
machines would see it.
With several ``--slots`` values the whole measurement runs once per value, each on a fresh server
(``SALIENCY_COMPUTE_SLOTS``): 1 is the queue's default on a CPU, 8 lets all eight sessions compute at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_dashboard import CHROMIUM_ARGS, free_port, photo, rss_mb  # noqa: E402

HEATMAP_JS = """() => { const p = document.querySelector('.st-key-heatmap .js-plotly-plot');
    if (!p || !p.data || !p.data.length) return null; const z = p.data[0].z;
    if (z && z._inputArray) {  // Plotly's typed-array spec, as Streamlit sends it: {dtype, bdata, shape}
        const a = z._inputArray; const flat = a.length !== undefined && typeof a[0] === 'number'
            ? Array.from(a) : Array.from(a, row => Array.from(row)).flat();
        return {shape: String(z.shape).split(',').map(Number), values: flat}; }
    const rows = Array.from(z, row => Array.from(row));
    return {shape: [rows.length, rows[0].length], values: rows.flat()}; }"""
PLOT_JS = "document.querySelector('.st-key-heatmap .js-plotly-plot')"
# The heatmap is drawn (Plotly has laid it out) and the page is not running a script.
SETTLED_JS = f"""() => {{ const p = {PLOT_JS};
    return !!(p && p._fullLayout && p.data && p.data.length)
        && !document.querySelector('[data-testid="stStatusWidget"]'); }}"""
# ...and its data is no longer the figure that was on screen before the upload (window.__before).
REDRAWN_JS = f"""() => {{ const p = {PLOT_JS};
    return !!(p && p._fullLayout && p.data && p.data.length && p.data[0].z !== window.__before); }}"""
FAITHFULNESS_PLOTS = 4  # what the Faithfulness page shows once done (tests/app/test_browser.py PAGES)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children that were waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def browser_cpu_seconds() -> float:
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if "chromium" in (proc / "comm").read_text():
                    total += cpu_seconds(int(proc.name))
            except (OSError, ValueError, IndexError):
                continue
    return total


class MemoryWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples, self.stop = pid, 0.0, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                value = rss_mb(self.pid)
            except OSError:
                return
            self.samples.append(value)
            self.peak = max(self.peak, value)


def expected_map(data: bytes, method: str = "gradient", params: dict[str, object] | None = None) -> np.ndarray:
    from saliency_core.evaluation.analysis import AUTO_TARGET, analyse
    from saliency_core.inputs.images import load_image
    from saliency_core.models.loading import load_model

    model = expected_map.__dict__.setdefault("model", load_model(None, device="cpu"))
    (a,) = analyse(model, [load_image(data)], [AUTO_TARGET], [None], method=method, params=params)
    return a.maps["score"]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def open_saliency(browser, base: str):
    """A new session on the Saliency page, once the sample's heatmap is drawn and no script runs; and the
    seconds that took."""
    t0 = time.perf_counter()
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    await page.goto(f"{base}/saliency")
    await page.wait_for_selector("text=crop of Coffee", timeout=300_000)
    await page.wait_for_function(SETTLED_JS, timeout=300_000, polling=200)
    return context, page, time.perf_counter() - t0


async def upload_and_wait(page, name: str, data: bytes) -> float:
    """Seconds from the upload to its heatmap drawn on screen (the figure's data replaced and laid out)."""
    await page.evaluate(f"() => {{ window.__before = {PLOT_JS}.data[0].z; }}")
    t0 = time.perf_counter()
    await page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]',
                               files=[{"name": name, "mimeType": "image/png", "buffer": data}])
    await page.wait_for_selector(f"text=crop of {name}", timeout=600_000)
    await page.wait_for_function(REDRAWN_JS, timeout=600_000, polling=100)
    return time.perf_counter() - t0


async def faithfulness_of(page, base: str) -> float:
    query = urlsplit(page.url).query
    t0 = time.perf_counter()
    await page.goto(f"{base}/faithfulness?{query}")
    await page.locator(".js-plotly-plot").nth(FAITHFULNESS_PLOTS - 1).wait_for(state="visible", timeout=900_000)
    return time.perf_counter() - t0


def timing_records(log: Path, since: float) -> list[dict]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("finished", 0) >= since:
            out.append(r)
    return out


def chromium_path(nice: bool, folder: Path) -> str:
    """Debian's chromium, or with ``nice`` a wrapper that runs it at the lowest CPU priority: the server then
    gets the cores first, as it would if the browsers ran on the users' own machines."""
    if not nice:
        return "/usr/bin/chromium"
    wrapper = folder / "chromium-nice"
    wrapper.write_text('#!/bin/sh\nexec nice -n 19 /usr/bin/chromium "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


async def run(args: argparse.Namespace, base: str, server: subprocess.Popen, log: Path) -> dict:
    from playwright.async_api import async_playwright

    report: dict = {"rounds": []}
    photos = [photo(100 + i) for i in range(sum(args.sessions))]
    used = 0
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(args.nice_browsers, log.parent),
                                          args=CHROMIUM_ARGS)
        ctx, _, _ = await open_saliency(browser, base)  # warm: model loaded, sample cached
        await ctx.close()
        sessions = []
        for n in args.sessions:
            opened = await asyncio.gather(*(open_saliency(browser, base) for _ in range(n)))
            open_times = [t for _, _, t in opened]
            mine = photos[used:used + n]
            used += n
            since, cpu0, bcpu0 = time.time(), cpu_seconds(server.pid), browser_cpu_seconds()
            times = await asyncio.gather(*(upload_and_wait(pg, name, data) for (_, pg, _), (name, data)
                                           in zip(opened, mine, strict=True)))
            cpu1, bcpu1 = cpu_seconds(server.pid), browser_cpu_seconds()
            # Read back after every session is done, so that no session's read-back slows the others.
            shown_maps = [await pg.evaluate(HEATMAP_JS) for _, pg, _ in opened]
            correct = 0
            for z, (_, data) in zip(shown_maps, mine, strict=True):
                if z is not None:
                    ref = expected_map(data)
                    shown = np.asarray(z["values"], dtype=np.float64).reshape(z["shape"])
                    correct += int(shown.shape == ref.shape and np.allclose(shown, ref, rtol=1e-3,
                                                                            atol=1e-6 * ref.max()))
            records = timing_records(log, since)
            server_side = [r for r in records if r.get("what") == "analysis"]
            sent = [r["seconds"] for r in records if r.get("what") == "map sent"]
            report["rounds"].append({
                "sessions": n, "median_s": statistics.median(times), "p95_s": percentile(times, 95),
                "max_s": max(times), "correct": correct,
                "open_median_s": statistics.median(open_times), "open_max_s": max(open_times),
                "server_run_to_map_median_s": statistics.median(sent) if sent else None,
                "server_run_to_map_max_s": max(sent) if sent else None,
                "server_wait_median_s": statistics.median([r["waited"] for r in server_side]) if server_side
                else None,
                "server_compute_median_s": statistics.median([r["seconds"] for r in server_side]) if server_side
                else None,
                "server_cpu_s": cpu1 - cpu0, "browser_cpu_s": bcpu1 - bcpu0})
            print(json.dumps(report["rounds"][-1]), flush=True)
            sessions = opened
        if args.faithfulness:
            pages = [pg for _, pg, _ in sessions[:args.faithfulness]]
            t0 = time.time()
            times = await asyncio.gather(*(faithfulness_of(pg, base) for pg in pages))
            report["faithfulness"] = {"sessions": len(pages), "median_s": statistics.median(times),
                                      "max_s": max(times), "wall_s": time.time() - t0}
            print(json.dumps(report["faithfulness"]), flush=True)
        await browser.close()
    return report


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--faithfulness", type=int, default=8, help="sessions opening Faithfulness at once (0: none)")
    ap.add_argument("--slots", type=int, nargs="+", default=[None],
                    help="SALIENCY_COMPUTE_SLOTS for the server, one measurement per value (default: its own)")
    ap.add_argument("--nice-browsers", action="store_true",
                    help="run Chromium at nice 19, so that the server is measured as if the browsers were elsewhere")
    args = ap.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; load average before: "
          f"{os.getloadavg()[0]:.2f}")
    for slots in args.slots:
        measure(args, slots)
    return 0


def measure(args: argparse.Namespace, slots: int | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    log = tmp / "timing.jsonl"
    env = dict(os.environ, SALIENCY_UPLOAD_DIR=str(tmp / "uploads"), SALIENCY_TIMING_LOG=str(log))
    if slots is not None:
        env["SALIENCY_COMPUTE_SLOTS"] = str(slots)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
                               "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    watch = MemoryWatch(server.pid)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{base}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        watch.start()
        report = asyncio.run(run(args, base, server, log))
    finally:
        watch.stop.set()
        server.terminate()
        server.wait(timeout=30)
    print(f"\nSALIENCY_COMPUTE_SLOTS={slots if slots is not None else 'default'}; load average before: "
          f"{load_before[0]:.2f}; server RSS peak {watch.peak:.0f} MB "
          f"(first sample {watch.samples[0] if watch.samples else float('nan'):.0f} MB)")
    print("| sessions at once | median to heatmap | p95 | max | maps correct | server: median run to map sent "
          "(max) | server: median queue wait | server: median compute | server CPU s | browsers CPU s | "
          "opening the page, median (max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def secs(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f} s"

    for r in report["rounds"]:
        print(f"| {r['sessions']} | {r['median_s']:.1f} s | {r['p95_s']:.1f} s | {r['max_s']:.1f} s | "
              f"{r['correct']}/{r['sessions']} | {secs(r['server_run_to_map_median_s'])} "
              f"({secs(r['server_run_to_map_max_s'])}) | {secs(r['server_wait_median_s'])} | "
              f"{secs(r['server_compute_median_s'], 2)} | {r['server_cpu_s']:.0f} | {r['browser_cpu_s']:.0f} | "
              f"{r['open_median_s']:.1f} s ({r['open_max_s']:.1f} s) |")
    if "faithfulness" in report:
        f = report["faithfulness"]
        print(f"Faithfulness, {f['sessions']} sessions at once: median {f['median_s']:.1f} s, max {f['max_s']:.1f} s")


if __name__ == "__main__":
    raise SystemExit(main())
