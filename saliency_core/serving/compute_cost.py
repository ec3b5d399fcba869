"""How long a computation will take, known before it starts: its rows through the model, priced per row.

A link can ask for any view the dashboard draws, SmoothGrad at 256 samples on every stage of the
randomisation check included: minutes of one of the compute slots every user shares (the probe of the
security issue burned 300 CPU-seconds with one link). So before a page starts such a thing it adds up
what the computation will run (:class:`Work`: the methods' own pass counts, from their registry entries,
times the page's loops), prices it with the model's cost per row measured on its device
(:func:`measure_pass_cost`), and asks first when the estimate is over the server's budget
(:func:`confirm_above_s`, ``SALIENCY_CONFIRM_ABOVE_S``, default :data:`DEFAULT_CONFIRM_ABOVE_S`).

The rows are counted exactly (``tests/test_compute_cost.py`` checks each count against the rows the
engine actually runs); only the price per row is measured, once per model and device.

::

    work = method_work("smoothgrad", {"samples": 256}) + randomisation_work("smoothgrad", {"samples": 256}, 8)
    seconds = measure_pass_cost(model).seconds(work)

Never imports Streamlit.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from saliency_core.core.arguments import validate_request
from saliency_core.core.gradients import forward_and_vjps
from saliency_core.core.model_access import (
    ModelLike,
    device_of,
    input_dtype_of,
    memory_format_of,
    module_for,
    preprocessing_of,
    require_eval,
)
from saliency_core.core.precision import precision_context, synchronize
from saliency_core.errors import InvalidInputError
from saliency_core.methods.registry import get_method

CONFIRM_SETTING = "SALIENCY_CONFIRM_ABOVE_S"
#: Seconds of computation a view may start without asking. The dashboard's everyday views take a few
#: seconds on the 2-core CPU (one image's maps 65 ms, the Faithfulness page's first curves about 3 s); a
#: view over 20 s holds a compute slot long enough to be felt by everyone else on the server.
DEFAULT_CONFIRM_ABOVE_S = 20.0
CALIBRATION_ROWS = 4  # rows per timed batch: enough to amortise a call, little enough to be quick
CALIBRATION_REPEATS = 2  # timed batches of each kind, after one warm-up


@dataclass(frozen=True)
class Work:
    """Rows through the model that a computation will run (all its images together).

    gradient_rows : rows with a forward pass and the input gradients of both objectives
    forward_rows : rows with a forward pass only
    """

    gradient_rows: int = 0
    forward_rows: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(self.gradient_rows + other.gradient_rows, self.forward_rows + other.forward_rows)

    def __mul__(self, times: int) -> Work:
        return Work(self.gradient_rows * times, self.forward_rows * times)

    __rmul__ = __mul__

    def __bool__(self) -> bool:
        return self.gradient_rows > 0 or self.forward_rows > 0

    def within(self, other: Work) -> bool:
        """Whether this work is no more than ``other`` in both kinds of rows."""
        return self.gradient_rows <= other.gradient_rows and self.forward_rows <= other.forward_rows


NOTHING = Work()
#: What measuring the price costs (a warm-up and the timed batches, of each kind of row): work no bigger
#: than this is started without an estimate, since measuring would cost as much as doing it. One image's
#: maps by a one-pass method never ask.
CALIBRATION_WORK = Work((1 + CALIBRATION_REPEATS) * CALIBRATION_ROWS, (1 + CALIBRATION_REPEATS) * CALIBRATION_ROWS)


def method_work(method: str, params: Mapping[str, object] | None = None, images: int = 1,
                size: int | tuple[int, int] | None = None) -> Work:
    """An attribution method's score and loss maps of ``images`` images (:func:`saliency_core.attribute`,
    :func:`saliency_core.evaluation.analysis.analyse`), from the method's own pass counts for ``params``.
    ``size``: the images' (H, W) or side, for a method whose passes depend on it (Occlusion); None: 224 px."""
    passes = get_method(method).cost(params, size)
    return Work(passes.gradient * images, passes.forward * images)


def deletion_insertion_work(orders: int, steps: int, images: int = 1) -> Work:
    """:func:`saliency_core.evaluation.faithfulness.deletion_insertion_orders` of ``orders`` orders (the random one
    included) for a resolved target: ``2 * steps`` perturbed images per order and image, forward only."""
    return Work(forward_rows=orders * 2 * steps * images)


def randomisation_work(method: str, params: Mapping[str, object] | None, stages: int, images: int = 1,
                       size: int | tuple[int, int] | None = None) -> Work:
    """:func:`saliency_core.evaluation.sanity.cascading_randomization` with at most ``stages`` stages: the method's
    maps on the trained model and after each stage (a model has at least as many layers as stages)."""
    return method_work(method, params, images, size) * (stages + 1)


def ranking_work(methods: Mapping[str, Mapping[str, object]], maps: int, steps: int,
                 size: int | tuple[int, int] | None = None) -> Work:
    """:func:`saliency_core.evaluation.method_ranking.ranking_table` of one image: deletion and insertion of ``maps``
    maps and the random order, then each method (name -> its parameters) once on the randomised model."""
    randomised = sum((method_work(m, p, size=size) for m, p in methods.items()), NOTHING)
    return deletion_insertion_work(maps + 1, steps) + randomised


@dataclass(frozen=True)
class PassCost:
    """Seconds per row of each kind, for one model on one device in one precision."""

    gradient_s: float
    forward_s: float

    def seconds(self, work: Work) -> float:
        """The estimated wall time of ``work``."""
        return work.gradient_rows * self.gradient_s + work.forward_rows * self.forward_s


def measure_pass_cost(model: ModelLike, precision: str = "exact", *, size: int | None = None,
                      rows: int = CALIBRATION_ROWS, repeats: int = CALIBRATION_REPEATS) -> PassCost:
    """The model's price per row on its device: the fastest of ``repeats`` timed batches of ``rows``.

    Gradient rows run :func:`saliency_core.core.gradients.forward_and_vjps` for both
    objectives, forward rows the module under ``torch.inference_mode()``, as
    the methods and the faithfulness checks do; each kind is warmed up once
    first (lazy initialisation, first allocations). The fastest batch is
    kept because other work on the machine can only slow a timing down: the
    estimate is of the work, not of a moment's load. ``size``: the image side
    (default: the model's crop, else 224). The model is only read.
    """
    validate_request(precision=precision)
    module = module_for(model, precision)
    require_eval(module)
    device = device_of(module)
    prep = preprocessing_of(model)
    side = size or int(getattr(prep, "crop", 224))
    x = torch.zeros(rows, 3, side, side, device=device, dtype=input_dtype_of(module))
    y = torch.zeros(rows, dtype=torch.int64, device=device)
    fmt = memory_format_of(module)

    def gradient_batch() -> None:
        forward_and_vjps(module, x, y, ("score", "loss"), precision=precision)

    def forward_batch() -> None:
        with torch.inference_mode(), precision_context(device, precision):
            module(x.contiguous(memory_format=fmt))

    def fastest(run) -> float:
        run()
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times.append(time.perf_counter() - start)
        return min(times) / rows

    return PassCost(gradient_s=fastest(gradient_batch), forward_s=fastest(forward_batch))


def confirm_above_s(environ: Mapping[str, str] | None = None) -> float:
    """Seconds of estimated computation a view may start without asking: ``SALIENCY_CONFIRM_ABOVE_S`` if
    set (``inf``: never ask, ``0``: ask for anything worth estimating), else :data:`DEFAULT_CONFIRM_ABOVE_S`."""
    env = os.environ if environ is None else environ
    value = env.get(CONFIRM_SETTING, "").strip()
    if not value:
        return DEFAULT_CONFIRM_ABOVE_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:
        raise InvalidInputError(f"{CONFIRM_SETTING} must be a number of seconds >= 0 (inf: never ask), got {value!r}")
    return seconds
