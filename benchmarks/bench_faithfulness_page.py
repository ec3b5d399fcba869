"""The Faithfulness page's first view, timed the way the page computes it, old way against new way.

Run from the repository root::

    .venv/bin/python benchmarks/bench_faithfulness_page.py [--reps 5] [--sample coffee] [--omp-compare]
    .venv/bin/python benchmarks/bench_faithfulness_page.py --apptest [--reps 3]

One image, default options (20 steps, blur baseline, 8 randomisation stages, both maps, exact
precision), embedded model on the CPU, model loaded and the image analysed beforehand (as when the
page opens after the Saliency page). Rounds alternate old and new (which goes first alternates too);
medians and old/new ratios come from the same run.

* **first curves**: from the analysed crop to both deletion/insertion figures and the ranking table
  ready to send. Old: three ``deletion_insertion`` calls (score, loss, random) and the table built
  with pandas in the page. New: ``deletion_insertion_orders`` (one batched pass) and
  ``ranking_table``.
* **randomisation and strip**: what follows the curves: ``cascading_randomization``, the similarity
  figure, the strip of maps (old: 224 px heatmaps; new: 112 px block means) and their JSON.

``--omp-compare`` also times the new first curves in child processes that alternate
``OMP_WAIT_POLICY`` unset and ``PASSIVE`` (it must be set before torch starts, so one process
cannot compare both). ``--apptest`` times the real page in Streamlit's AppTest: from the start of
a script run to the deletion chart being sent, and to the end of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from saliency_core.evaluation import analysis, faithfulness, sanity  # noqa: E402
from saliency_core.figures import charts, image_figures  # noqa: E402
from saliency_core.inputs.preprocessing import normalize  # noqa: E402
from saliency_core.inputs.samples import sample_by_name  # noqa: E402
from saliency_core.models.loading import load_model  # noqa: E402

OBJECTIVES = ("score", "loss")
STEPS, BASELINE, STAGES, CHUNK = 20, "blur", 8, 8  # the page's defaults; chunk of 8 on the CPU


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {load}")


def setup(sample: str):
    model = load_model(None, "cpu", allow_download=False)
    s = sample_by_name(sample)
    a = analysis.analyse(model, [s.image], [None], [s.label])[0]
    x = normalize(a.display[None], model.preprocessing)
    return model, a, x


# --------------------------------------------------------------------------- the old page, as it was


def old_first_curves(model, a, x) -> int:
    orders = {m: (a.maps[m][None], "map") for m in OBJECTIVES} | {"random order": (None, "random")}
    curves = {name: faithfulness.deletion_insertion(model, x, [a.target], maps, steps=STEPS, baseline=BASELINE,
                                                    order=order, batch_size=CHUNK)
              for name, (maps, order) in orders.items()}
    fractions = next(iter(curves.values())).fractions
    figs = [charts.curves_figure(fractions, {n: r.deletion[0] for n, r in curves.items()}, title="Deletion"),
            charts.curves_figure(fractions, {n: r.insertion[0] for n, r in curves.items()}, title="Insertion")]
    table = pd.DataFrame({"order": list(curves),
                          "deletion AUC": [float(r.deletion_auc[0]) for r in curves.values()],
                          "insertion AUC": [float(r.insertion_auc[0]) for r in curves.values()]})
    table["insertion − deletion"] = table["insertion AUC"] - table["deletion AUC"]
    table = table.sort_values("insertion − deletion", ascending=False, ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return sum(len(f.to_json()) for f in figs)


def old_rest(model, a, x) -> int:
    rand = sanity.cascading_randomization(model, x, [a.target], objectives=OBJECTIVES, reduction=a.reduction,
                                          max_stages=STAGES)
    sim = rand.similarity
    similarity = charts.curves_figure(
        np.arange(len(rand.stages)),
        {f"{m} · {metric}": sim[sim.objective == m].sort_values("stage_index")[metric].to_numpy()
         for m in OBJECTIVES for metric in ("spearman", "ssim")}, x_range=None)
    strip = image_figures.gallery_figure(None, {m: list(rand.maps[m][:, 0]) for m in OBJECTIVES},
                                         [f"stage {i}" for i in range(len(rand.stages))])
    return len(similarity.to_json()) + len(strip.to_json())


# --------------------------------------------------------------------------- the page now


def new_first_curves(model, a, x) -> int:
    curves = faithfulness.deletion_insertion_orders(model, x, [a.target], {m: a.maps[m][None] for m in OBJECTIVES},
                                                    STEPS, BASELINE, random="random order", batch_size=CHUNK)
    fractions = curves["random order"].fractions
    figs = [charts.curves_figure(fractions, {n: r.deletion[0] for n, r in curves.items()}, title="Deletion"),
            charts.curves_figure(fractions, {n: r.insertion[0] for n, r in curves.items()}, title="Insertion")]
    faithfulness.ranking_table(curves)
    return sum(len(f.to_json()) for f in figs)


def new_rest(model, a, x) -> int:
    rand = sanity.cascading_randomization(model, x, [a.target], objectives=OBJECTIVES, reduction=a.reduction,
                                          max_stages=STAGES)
    similarity = charts.curves_figure(list(range(len(rand.stages))), sanity.similarity_curves(rand), x_range=None)
    strip = image_figures.gallery_figure(None, sanity.stage_maps(rand, max_side=112),
                                         [f"stage {i}" for i in range(len(rand.stages))])
    return len(similarity.to_json()) + len(strip.to_json())


# --------------------------------------------------------------------------- measuring


def clock(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, JSON bytes) of one call."""
    w, c = time.perf_counter(), time.process_time()
    size = fn()
    return time.perf_counter() - w, time.process_time() - c, size


def compare(reps: int, sample: str) -> None:
    model, a, x = setup(sample)
    cases = {"first curves": (old_first_curves, new_first_curves), "randomisation and strip": (old_rest, new_rest)}
    for old, new in cases.values():  # warm-up
        old(model, a, x), new(model, a, x)
    times: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for r in range(reps):
        for case, (old, new) in cases.items():
            pair = [("old", old), ("new", new)]
            for way, fn in (pair if r % 2 == 0 else pair[::-1]):
                times.setdefault((case, way), []).append(clock(lambda fn=fn: fn(model, a, x)))
        print(f"round {r + 1}/{reps}: " + ", ".join(f"{c} {w} {t[-1][0]:.2f} s" for (c, w), t in times.items()),
              flush=True)
    print(f"\n{machine()}\nsample {sample!r}, {reps} rounds, medians\n")
    print("| step | old wall | new wall | old / new | old CPU | new CPU | old JSON | new JSON |")
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        old, new = times[(case, "old")], times[(case, "new")]
        med = [statistics.median(t[i] for t in runs) for runs in (old, new) for i in (0, 1)]
        print(f"| {case} | {med[0]:.2f} s | {med[2]:.2f} s | {med[0] / med[2]:.2f} | {med[1]:.2f} s | "
              f"{med[3]:.2f} s | {old[0][2] / 1e3:.0f} kB | {new[0][2] / 1e3:.0f} kB |")


def child(reps: int, sample: str) -> None:
    model, a, x = setup(sample)
    new_first_curves(model, a, x)
    walls = [clock(lambda: new_first_curves(model, a, x))[0] for _ in range(reps)]
    print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY", "unset"), "walls": walls}))


def omp_compare(reps: int, sample: str, rounds: int) -> None:
    runs: dict[str, list[float]] = {"unset": [], "PASSIVE": []}
    for r in range(rounds):
        for policy in (("unset", "PASSIVE") if r % 2 == 0 else ("PASSIVE", "unset")):
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy == "PASSIVE":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            out = subprocess.run([sys.executable, __file__, "--child", "--reps", str(reps), "--sample", sample],
                                 env=env, capture_output=True, text=True, check=True).stdout
            runs[policy] += json.loads(out.strip().splitlines()[-1])["walls"]
            print(f"round {r + 1}/{rounds} {policy}: {' '.join(f'{w:.2f}' for w in runs[policy][-reps:])}",
                  flush=True)
    unset, passive = statistics.median(runs["unset"]), statistics.median(runs["PASSIVE"])
    print(f"\nnew first curves, median of {len(runs['unset'])} per policy ({machine()}):")
    print(f"OMP_WAIT_POLICY unset {unset:.2f} s, PASSIVE {passive:.2f} s, unset / PASSIVE {unset / passive:.2f}")


def apptest(reps: int, sample: str) -> None:
    import tempfile

    os.environ.setdefault("SALIENCY_DEVICE", "cpu")
    os.environ.setdefault("SALIENCY_UPLOAD_DIR", tempfile.mkdtemp(prefix="bench-uploads-"))
    from streamlit.delta_generator import DeltaGenerator
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    from pages.ui import caches

    init = PagesManager.__init__

    def every_run_through_the_entry_script(self, *args, **kwargs):  # as tests/app/conftest.py does
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = every_run_through_the_entry_script
    sent: dict[str, float] = {}
    plotly_chart = DeltaGenerator.plotly_chart

    def noting(self, *args, **kwargs):
        out = plotly_chart(self, *args, **kwargs)
        sent.setdefault(str(kwargs.get("key")), time.perf_counter())
        return out

    DeltaGenerator.plotly_chart = noting
    firsts, totals = [], []
    for r in range(reps + 1):  # the first round loads the model and analyses the image
        caches.progress_results().clear()
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
        at.query_params.update(sample=sample)
        at.switch_page("pages/faithfulness.py")
        sent.clear()
        start = time.perf_counter()
        at.run()
        end = time.perf_counter()
        if at.exception or "deletion" not in sent:
            raise SystemExit(f"the page failed: {[e.value for e in at.exception]}")
        label = "cold (model load, analysis)" if r == 0 else f"round {r}/{reps}"
        print(f"{label}: first curves {sent['deletion'] - start:.2f} s, whole page {end - start:.2f} s", flush=True)
        if r:
            firsts.append(sent["deletion"] - start)
            totals.append(end - start)
    print(f"\nAppTest, page as it is now ({machine()}): first curves median {statistics.median(firsts):.2f} s, "
          f"whole page median {statistics.median(totals):.2f} s over {reps} warm rounds")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sample", default="coffee")
    ap.add_argument("--omp-compare", action="store_true")
    ap.add_argument("--omp-rounds", type=int, default=3)
    ap.add_argument("--apptest", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.reps, args.sample)
    elif args.apptest:
        apptest(args.reps, args.sample)
    else:
        compare(args.reps, args.sample)
        if args.omp_compare:
            omp_compare(2, args.sample, args.omp_rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
