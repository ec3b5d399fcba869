"""The batch job's command line: its options, as parsed and checked (``python -m saliency_core.batch --help``).

:func:`parse_args` turns the arguments into :class:`Options`; a bad value is a
usage error, one line on stderr and exit status 2, before anything is loaded
or written: the job runs for hours, so a typo must not cost a model load, a
traceback or, as ``--faithfulness-steps 100000000`` did, 20 GB. Numbers stop
at the caps the dashboard has (:mod:`saliency_core.core.limits`), and ``--out``
must be a folder the job can write, never the current folder by accident.
:mod:`saliency_core.jobs.batch` runs the job with them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from saliency_core.core import gradients, limits, precision
from saliency_core.errors import SaliencyError
from saliency_core.jobs import map_specs, metric_specs
from saliency_core.jobs.localisation import file_sha256
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from saliency_core.models.registry import DEFAULT_MODEL, model_names

# The options that change the numbers: a restarted job must use the same ones (and the methods' parameters).
CONFIG_KEYS = ("images", "model", "maps", "reduction", "precision", "faithfulness", "faithfulness_steps",
               "save_maps")
PROG = "python -m saliency_core.batch"


@dataclass
class Options:
    images: str
    out: str
    model: str = DEFAULT_MODEL
    maps: tuple[str, ...] = gradients.OBJECTIVES  # --maps entries: "score", "smoothgrad:loss", ...
    method_params: dict[str, dict[str, object]] = field(default_factory=dict)  # as given; defaults filled later
    batch_size: int = 32
    device: str = "auto"
    workers: int | None = None  # None: see default_workers
    reduction: str = "max"
    precision: str = "exact"
    faithfulness: bool = False
    faithfulness_steps: int = 20
    save_maps: bool = False
    part_size: int = 1024
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    metrics: tuple[str, ...] = ()  # --metrics, expanded: metric names of evaluation.metrics.METRICS
    metric_params: dict[str, dict[str, object]] = field(default_factory=dict)  # owner -> as given
    boxes: str | None = None  # --boxes CSV
    boxes_sha256: str | None = None
    masks: str | None = None  # --masks DIR

    @property
    def specs(self) -> tuple[map_specs.MapSpec, ...]:
        return map_specs.parse_maps(self.maps)

    def params_for(self, method: str) -> dict[str, object]:
        """Every parameter of ``method`` as the job uses it: given ones, then the defaults."""
        return ATTRIBUTION_METHODS[method].resolve(self.method_params.get(method, {}))

    def used_params(self) -> dict[str, dict[str, object]]:
        """method -> its parameters, for the methods of the maps that have any."""
        methods = map_specs.methods_of(self.specs)
        return {m: p for m in methods if (p := self.params_for(m))}

    def metric_params_for(self, owner: str) -> dict[str, object]:
        """Every parameter of a metric owner ("road", "infidelity") as the job uses it, defaults filled in."""
        return metric_specs.owners()[owner].resolve(self.metric_params.get(owner, {}))

    def used_metric_params(self) -> dict[str, dict[str, object]]:
        """owner -> its parameters, for the metrics asked for that have any."""
        return {o: p for o in metric_specs.owners_of(self.metrics) if (p := self.metric_params_for(o))}

    def config(self) -> dict:
        values = {k: getattr(self, k) for k in CONFIG_KEYS}
        values["images"] = str(Path(self.images).expanduser().resolve())
        values["maps"] = list(self.maps)
        if params := self.used_params():  # absent for the plain gradient: older results folders still match
            values["method_params"] = params
        if self.metrics:  # absent without --metrics, for the same reason
            values["metrics"] = list(self.metrics)
            if params := self.used_metric_params():
                values["metric_params"] = params
        if self.boxes is not None:  # a changed CSV must not be mixed into a resumed run
            values["boxes"] = {"file": str(Path(self.boxes).expanduser().resolve()), "sha256": self.boxes_sha256}
        if self.masks is not None:
            values["masks"] = str(Path(self.masks).expanduser().resolve())
        return values


def recorded_config(config: dict) -> dict:
    """A manifest's recorded ``config`` in today's names, so that a folder written before them still matches and
    resumes: ``methods`` was ``maps``, and an old parameter value (baseline "zeros") is the one it meant."""
    config = dict(config)
    if "methods" in config and "maps" not in config:
        config["maps"] = config.pop("methods")
    params = config.get("method_params")
    if isinstance(params, dict):
        config["method_params"] = {m: _renamed_values(m, given) for m, given in params.items()}
    return config


def _renamed_values(method: str, given: object) -> object:
    if method not in ATTRIBUTION_METHODS or not isinstance(given, dict):
        return given
    params = {p.name: p for p in ATTRIBUTION_METHODS[method].params}
    return {k: (params[k].new_name(v) or v) if k in params else v for k, v in given.items()}


def _option(method: str, param: str) -> str:
    return f"--{method}-{param}".replace("_", "-")


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error on one line (its own usage message runs to 20 lines for this job)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def out_problem(out: str) -> str | None:
    """Why the job could not write its results in ``out``, or None; nothing is created.

    The folder, or the nearest of its parents that exists, must be a folder this user may write in. (Root
    passes the permission check everywhere; :mod:`saliency_core.jobs.batch` still reports a folder it then
    fails to make as a usage error.)
    """
    if not out.strip():
        return "--out is empty: name the results folder (an empty name would write into the current folder)"
    path = Path(out).absolute()
    existing = next((q for q in (path, *path.parents) if q.exists()), None)
    if existing is None:  # not even "/" exists: nothing to write in
        return f"--out {out}: none of its folders exists"
    if not existing.is_dir():
        return f"--out {out}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--out {out}: this user may not write in {existing}"
    return None


def _number(value: float) -> str:
    """256, 1, 2147483647 (not 2.14748e+09), 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _many_pass_methods() -> str:
    """The methods whose parameters ask for many passes per image ("smoothgrad and integrated_gradients")."""
    names = [m.name for m in ATTRIBUTION_METHODS.values() if any(p.costly for p in m.params)]
    if len(names) < 2:
        return "".join(names) or "methods of many passes"
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _check_number(p: argparse.ArgumentParser, option: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        p.error(f"{option} must be from {low:g} to {high:g}, got {value}")


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = _Parser(
        prog=PROG,
        description="Score- and loss-gradient saliency, their statistics and agreement for every image of a "
                    "dataset, written as Parquet. Run it under torchrun to use several GPUs or machines.")
    p.add_argument("--images", required=True,
                   help="an ImageFolder tree (class folders named by WordNet id such as n01440764, or by class "
                        "index 0..999) or a cs231n-style .npz with arrays X and y")
    p.add_argument("--out", required=True, help="results folder; a run started again skips what it holds")
    p.add_argument("--model", default=DEFAULT_MODEL, choices=model_names(),
                   help="a built-in model, or custom:NAME for a model of SALIENCY_MODELS_DIR; a torchvision "
                        "model's weights are downloaded once if not cached (unless SALIENCY_ALLOW_DOWNLOAD=0)")
    p.add_argument("--maps", default=None,
                   help="comma-separated maps: score and loss (the plain gradient of each; the default is both), "
                        "or METHOD:OBJECTIVE such as smoothgrad:loss, or a METHOD alone for both objectives. "
                        f"Methods: {', '.join(ATTRIBUTION_METHODS)}")
    p.add_argument("--methods", default=None, help=argparse.SUPPRESS)  # the old name of --maps
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per forward pass at most (default 32, at most "
                        f"{limits.MAX_BATCH_SIZE}); for {_many_pass_methods()}, their rows (noisy copies, path "
                        "points) per pass. Fewer when SALIENCY_PASS_MEMORY_MB allows fewer for the model's input "
                        "size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (each torchrun rank takes its LOCAL_RANK GPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes per rank (default: on a GPU, CPU cores / ranks, at most 8; "
                        f"on the CPU, only the cores torch's own threads leave free; at most {limits.MAX_WORKERS})")
    p.add_argument("--reduction", default="max", choices=list(gradients.REDUCTIONS))
    p.add_argument("--precision", default="exact", choices=list(precision.PRECISIONS))
    p.add_argument("--faithfulness", action="store_true",
                   help="also deletion/insertion AUCs per map and for a random order (about 40 forward "
                        "passes per image and map)")
    p.add_argument("--faithfulness-steps", type=int, default=20,
                   help=f"deletion/insertion steps (default 20, at most {limits.MAX_FAITHFULNESS_STEPS})")
    p.add_argument("--save-maps", action="store_true", help="also keep the maps, float16, in maps/*.npz")
    p.add_argument("--part-size", type=int, default=1024,
                   help="images per Parquet part: what a stopped run loses at most, per rank (default 1024, "
                        f"at most {limits.MAX_PART_SIZE})")
    for method in ATTRIBUTION_METHODS.values():
        if not method.params:
            continue
        group = p.add_argument_group(f"{method.title} ({method.name}) parameters")
        for param in method.params:
            default = param.default_text
            most = f", at most {_number(param.maximum)}" if param.maximum is not None else ""
            # Old values (baseline zeros) are accepted but not offered: the metavar lists today's.
            group.add_argument(_option(method.name, param.name), dest=f"{method.name}__{param.name}",
                               type=param.kind, default=None,
                               choices=[*param.choices, *dict(param.renamed)] if param.choices else None,
                               metavar="{" + ",".join(param.choices) + "}" if param.choices else param.name.upper(),
                               help=f"{param.help} (default: {default}{most})")
    _add_metric_options(p)
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None)
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    a = p.parse_args(argv)
    if not a.images.strip():
        p.error("--images is empty: name the dataset folder or .npz (an empty name would read the current folder)")
    if problem := out_problem(a.out):
        p.error(problem)
    if a.methods is not None:
        if a.maps is not None:
            p.error("--methods is the old name of --maps: give --maps only")
        print(f"{PROG}: --methods is deprecated, use --maps (the same list; --methods goes in the next release)",
              file=sys.stderr)
    try:
        given = next((v for v in (a.maps, a.methods) if v is not None), ",".join(gradients.OBJECTIVES))
        maps = map_specs.parse_maps(given)
    except SaliencyError as exc:
        p.error(str(exc))
    used = map_specs.methods_of(maps)
    params: dict[str, dict[str, object]] = {}
    for method in ATTRIBUTION_METHODS.values():
        for param in method.params:
            value = getattr(a, f"{method.name}__{param.name}")
            if value is None:
                continue
            if method.name not in used:
                p.error(f"{_option(method.name, param.name)} is given but --maps asks for no {method.name} map")
            if (new := param.new_name(value)) is not None:
                print(f"{PROG}: {_option(method.name, param.name)} {value} is deprecated, use {new} (the same "
                      f"{param.name}; {value} goes in the next release)", file=sys.stderr)
                value = new
            try:
                params.setdefault(method.name, {})[param.name] = param.check(value)
            except SaliencyError as exc:
                p.error(f"{_option(method.name, param.name)}: {exc}")
            if param.maximum is not None and value > param.maximum:
                p.error(f"{_option(method.name, param.name)} must be at most {_number(param.maximum)} (the "
                        f"dashboard's limit too), got {value}")
    _check_number(p, "--batch-size", a.batch_size, 1, limits.MAX_BATCH_SIZE)
    _check_number(p, "--faithfulness-steps", a.faithfulness_steps, 1, limits.MAX_FAITHFULNESS_STEPS)
    _check_number(p, "--part-size", a.part_size, 1, limits.MAX_PART_SIZE)
    if a.workers is not None:
        _check_number(p, "--workers", a.workers, 0, limits.MAX_WORKERS)
    metrics, metric_params, boxes_sha256 = _read_metric_options(p, a)
    return Options(images=a.images, out=a.out, model=a.model, maps=tuple(s.entry for s in maps),
                   method_params=params, batch_size=a.batch_size,
                   device=a.device, workers=a.workers, reduction=a.reduction, precision=a.precision,
                   faithfulness=a.faithfulness, faithfulness_steps=a.faithfulness_steps, save_maps=a.save_maps,
                   part_size=a.part_size, progress=a.progress, metrics=metrics, metric_params=metric_params,
                   boxes=a.boxes, boxes_sha256=boxes_sha256, masks=a.masks)


def _add_metric_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=None,
                   help="comma-separated evaluation metrics, a column each per map (<map>_<metric>): "
                        f"{', '.join(metric_specs.EVALUATION_METRICS)}; road, sensitivity and localisation name "
                        "two or three at once (road_morf,road_lerf; max_sensitivity,avg_sensitivity; the three that "
                        "need --boxes or --masks)")
    p.add_argument("--boxes", default=None,
                   help="CSV of object boxes for the localisation metrics: key (or path), x0, y0, x1, y1 in the "
                        f"original image's pixels (at most {limits.MAX_BOXES_BYTES // 2**20} MB)")
    p.add_argument("--masks", default=None,
                   help="folder of object masks for the localisation metrics: image a/b.jpg has its mask at "
                        "DIR/a/b.png, the image's size, non-zero on the object")
    for owner, metric in metric_specs.owners().items():
        if not metric.params:
            continue
        names = [m for m in metric_specs.EVALUATION_METRICS if metric_specs.owner(m) == owner]
        group = p.add_argument_group(f"{owner} parameters ({', '.join(names)}; {metric.citation})")
        for param in metric.params:
            most = metric_specs.cap(param.name, param.maximum)
            group.add_argument(metric_specs.option(owner, param.name), dest=f"metric__{owner}__{param.name}",
                               type=param.kind, default=None, choices=list(param.choices) or None,
                               metavar="{" + ",".join(param.choices) + "}" if param.choices else param.name.upper(),
                               help=f"{param.help} (default: {param.default}"
                                    f"{f', at most {_number(most)}' if most is not None else ''})")


def _read_metric_options(p: argparse.ArgumentParser, a: argparse.Namespace
                         ) -> tuple[tuple[str, ...], dict[str, dict[str, object]], str | None]:
    """(metrics, their parameters as given, the boxes CSV's sha256), each checked: a bad one is a usage error."""
    metrics: tuple[str, ...] = ()
    if a.metrics is not None:
        try:
            metrics = metric_specs.parse_metrics(a.metrics)
        except SaliencyError as exc:
            p.error(str(exc))
    used = metric_specs.owners_of(metrics)
    params: dict[str, dict[str, object]] = {}
    for owner, metric in metric_specs.owners().items():
        for param in metric.params:
            value = getattr(a, f"metric__{owner}__{param.name}")
            if value is None:
                continue
            name = metric_specs.option(owner, param.name)
            if owner not in used:
                p.error(f"{name} is given but --metrics asks for no {owner} metric")
            try:
                params.setdefault(owner, {})[param.name] = param.check(value)
            except SaliencyError as exc:
                p.error(f"{name}: {exc}")
            most = metric_specs.cap(param.name, param.maximum)
            if most is not None and value > most:
                p.error(f"{name} must be at most {_number(most)}, got {value}")
    localisation = metric_specs.needs_mask(metrics)
    if a.boxes is not None and a.masks is not None:
        p.error("give --boxes or --masks, not both")
    source = "--boxes" if a.boxes is not None else "--masks" if a.masks is not None else None
    if localisation and source is None:
        p.error(f"--metrics {','.join(localisation)} needs the objects: --boxes CSV or --masks DIR")
    if source is not None and not localisation:
        p.error(f"{source} is given but --metrics asks for no localisation metric "
                f"({', '.join(metric_specs.ALIASES['localisation'])})")
    sha = None
    if a.boxes is not None:
        try:
            sha = file_sha256(a.boxes)
        except SaliencyError as exc:
            p.error(str(exc))
    return metrics, params, sha
