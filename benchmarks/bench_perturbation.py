"""The perturbation methods against their oracles, for the same result: both objectives, side by side.

Run from the repository root::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_perturbation.py --device cpu

On the embedded model (EfficientNet-Lite0) and the sample photos, each of Occlusion, RISE, KernelSHAP and LIME
computes the score and the loss (−L) maps of 1 and of 8 images with its dashboard defaults through
``saliency_core.attribute``; the oracle computes the same two maps the way its library is used:

* Occlusion: Captum's ``Occlusion``, once per objective (``target=y`` on the logits, then on their log-softmax);
* RISE: the paper's estimator written plainly, once per objective: every mask made at once (the method's own
  masks, so the maps are the same), each image's masked copies through the model, Σ f_i M_i, less the level;
* KernelSHAP: Captum's ``KernelShap``, once per objective and image, given the method's superpixels (the
  segmentation is timed too) and samples;
* LIME: Captum's ``Lime`` the same way, with lime_image's proximity kernel and a ridge fit (as the method).

Every forward pass holds 8 rows on the CPU (64 on a GPU) on both sides: the method's own chunk
(``saliency_core.core.passes.CPU_FORWARD_ROWS``) and Captum's ``perturbations_per_eval`` chosen to match. Each
round runs every contender once, in turn, and the median over rounds is reported, with the largest difference
between the two results relative to the oracle's largest value (both maps), which says they computed the same.
Wall seconds and CPU seconds (the process's, both threads) are both reported: on a machine shared with other
work the wall time follows the load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import timed  # this folder is on sys.path when run as a script

from saliency_core import attribute
from saliency_core.inputs.samples import sample_images
from saliency_core.methods import _surrogate, kernel_shap, lime
from saliency_core.methods._common import seeded_generator
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from saliency_core.methods.rise import Masks
from saliency_core.models.loading import load_model

OBJECTIVES = ("score", "loss")
METHODS = ("occlusion", "rise", "kernel_shap", "lime")


def objective_function(module: torch.nn.Module, objective: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if objective == "score":
        return module
    return lambda x: torch.log_softmax(module(x), dim=1)


def captum_occlusion(model, x, y, params, rows) -> dict[str, torch.Tensor]:
    from captum.attr import Occlusion

    w, s = params["window"], params["stride"]
    ppe = max(1, rows // x.shape[0])
    return {obj: Occlusion(objective_function(model.model, obj)).attribute(
        x, sliding_window_shapes=(3, w, w), strides=(3, s, s), target=y, baselines=0.0, perturbations_per_eval=ppe)
        for obj in OBJECTIVES}


def plain_rise(model, x, y, params, rows) -> dict[str, torch.Tensor]:
    """The paper's S = 1/(N p) Σ_i f(x ⊙ M_i) M_i, less f̄ Σ_i M_i / (N p), one objective at a time."""
    n_masks, keep = params["masks"], params["keep"]
    masks = Masks(n_masks, tuple(x.shape[2:]), params["grid"], keep, params["seed"]).take(
        torch.arange(n_masks), x.device, x.dtype)
    flat = masks.reshape(n_masks, -1).double()
    out = {}
    for obj in OBJECTIVES:
        f = objective_function(model.model, obj)
        maps = []
        for n in range(x.shape[0]):
            values = []
            with torch.no_grad():
                for start in range(0, n_masks, rows):
                    stack = (masks[start:start + rows, None] * x[n]).contiguous(memory_format=torch.channels_last)
                    values.append(f(stack)[:, int(y[n])])
            v = torch.cat(values).double()
            s = (v @ flat - v.mean() * flat.sum(dim=0)) / (n_masks * keep)
            maps.append(s.view(1, 1, *x.shape[2:]).expand(1, 3, -1, -1))
        out[obj] = torch.cat(maps).float()
    return out


def captum_surrogate(method: str):
    def run(model, x, y, params, rows) -> dict[str, torch.Tensor]:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import KernelShap, Lime

        kw = {k: params[k] for k in ("superpixels", "segments", "compactness", "kernel_size", "max_dist")}
        images = _surrogate.display_images(SimpleNamespace(X=x, model=model))
        out = {obj: [] for obj in OBJECTIVES}
        for n, image in enumerate(images):
            labels = torch.from_numpy(_surrogate.segment(image, **kw))
            m = int(labels.max()) + 1
            draw = kernel_shap.draw if method == "kernel_shap" else lime.draw
            z = draw(params["samples"], m, seeded_generator(params["seed"]))

            def given(_inputs, z=z, **_kwargs):
                for row in z:
                    yield row[None].long()

            for obj in OBJECTIVES:
                f = objective_function(model.model, obj)
                if method == "kernel_shap":
                    explainer = KernelShap(f)
                else:
                    def proximity(_original, _perturbed, sample, **_kwargs):
                        return lime.weigh(sample.bool(), params["kernel_width"]).float()

                    explainer = Lime(f, interpretable_model=SkLearnRidge(alpha=lime.RIDGE_ALPHA),
                                     similarity_func=proximity)
                explainer.perturb_func = given
                out[obj].append(explainer.attribute(
                    x[n:n + 1], target=int(y[n]), feature_mask=labels[None, None], n_samples=params["samples"],
                    baselines=0.0, perturbations_per_eval=rows))
        return {obj: torch.cat(parts) for obj, parts in out.items()}

    return run


ORACLES = {"occlusion": ("Captum Occlusion", captum_occlusion), "rise": ("the paper's estimator, plainly", plain_rise),
           "kernel_shap": ("Captum KernelShap", captum_surrogate("kernel_shap")),
           "lime": ("Captum Lime (lime_image kernel, ridge)", captum_surrogate("lime"))}


def wall_and_cpu(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    start = time.process_time()
    wall = timed(fn, device)
    return wall, time.process_time() - start


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=3, help="rounds at batch 1 (median reported)")
    ap.add_argument("--batch-reps", type=int, default=1, help="rounds at larger batches")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))  # as the test suite; the 2-core machine's cores
    model = load_model(None, args.device)
    dev = model.device
    rows = 8 if dev.type == "cpu" else 64
    samples = sample_images()
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average{load()}", flush=True)
    results = []
    for batch in args.batches:
        images = [samples[i % len(samples)].image for i in range(batch)]
        x = model.preprocess(images).x
        with torch.no_grad():
            y = model.model(x).argmax(dim=1)
        reps = args.reps if batch == 1 else args.batch_reps
        for method in args.methods:
            params = ATTRIBUTION_METHODS[method].defaults()
            oracle_name, oracle = ORACLES[method]
            got: dict = {}

            def ours(params=params, method=method, got=got, x=x, y=y) -> None:
                got["ours"] = attribute(model, x, y, method, OBJECTIVES, **params).attributions

            def theirs(params=params, oracle=oracle, got=got, x=x, y=y) -> None:
                got["oracle"] = oracle(model, x, y, params, rows)

            times: dict[str, list[tuple[float, float]]] = {"ours": [], "oracle": []}
            for _ in range(reps):
                times["ours"].append(wall_and_cpu(ours, dev))
                times["oracle"].append(wall_and_cpu(theirs, dev))
            diff = max(float((got["ours"][o].cpu().double() - got["oracle"][o].cpu().double()).abs().max()
                             / got["oracle"][o].abs().max()) for o in OBJECTIVES)
            (w_ours, c_ours), (w_oracle, c_oracle) = (
                tuple(statistics.median(t[i] for t in times[k]) for i in (0, 1)) for k in ("ours", "oracle"))
            results.append((method, batch, oracle_name, w_ours, w_oracle, c_ours, c_oracle, diff, reps))
            print(f"{method} batch {batch}: ours {w_ours:.2f} s ({c_ours:.2f} CPU s), {oracle_name} {w_oracle:.2f} s "
                  f"({c_oracle:.2f} CPU s), wall x{w_oracle / w_ours:.2f}, CPU x{c_oracle / c_ours:.2f}, "
                  f"max diff {diff:.1e} (load{load()})", flush=True)
    print()
    print("| method | images | forward passes per image | oracle | saliency_core, both maps: wall (CPU) | "
          "oracle, both maps: wall (CPU) | oracle / saliency_core, wall | CPU | largest difference | rounds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, batch, oracle_name, w_ours, w_oracle, c_ours, c_oracle, diff, reps in results:
        passes = ATTRIBUTION_METHODS[method].cost(None, (224, 224)).forward
        print(f"| {method} | {batch} | {passes} | {oracle_name} | {w_ours:.1f} s ({c_ours:.1f} s) | "
              f"{w_oracle:.1f} s ({c_oracle:.1f} s) | **{w_oracle / w_ours:.2f}x** | **{c_oracle / c_ours:.2f}x** | "
              f"{diff:.0e} | {reps} |")
    print(f"\nload average at the end{load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
