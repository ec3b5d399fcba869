"""Downloads of the evaluations: deletion/insertion curves, the randomisation check and the Methods page's
ranking, as CSV (and the ranking as JSON), each with its provenance.

A CSV carries its provenance in leading "# key: <JSON>" lines: pandas reads
the table with ``pd.read_csv(f, comment="#")`` (text cells are quoted, so a
"#" inside one survives) and :func:`saliency_core.figures.provenance.read_csv_provenance`
reads the header back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.method_ranking import RANDOM_ORDER, MethodRanking
from saliency_core.evaluation.metrics import METRICS
from saliency_core.figures.provenance import check_record, csv_with_provenance, file_name_part
from saliency_core.methods.registry import ATTRIBUTION_METHODS

if TYPE_CHECKING:
    from saliency_core.evaluation.faithfulness import FaithfulnessResult
    from saliency_core.evaluation.sanity import RandomizationResult

FAITHFULNESS_KINDS = ("deletion_insertion", "randomisation")
CURVES_COLUMNS = ("order", "image", "target", "step", "fraction", "deletion", "insertion")


def curves_frame(results: Mapping[str, FaithfulnessResult]) -> pd.DataFrame:
    """Deletion and insertion curves of several orders as one long table.

    Parameters
    ----------
    results : order name (e.g. "score", "random order") -> result of
        :func:`saliency_core.evaluation.faithfulness.deletion_insertion` on the same images.

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
    results : order name -> :class:`~saliency_core.evaluation.faithfulness.FaithfulnessResult`,
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
    check_record(record, reduction=None, precision=first.precision)
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
    result : :class:`~saliency_core.evaluation.sanity.RandomizationResult`.
    record : :func:`provenance` of the image, model and target; its reduction
        and precision must match the result's.

    Returns
    -------
    UTF-8 CSV bytes: ``# key: <JSON>`` lines (the record's entries, then
    ``randomisation``: stages, layers per stage, seed, reduction, precision,
    method, objectives, targets), then ``result.similarity``.
    """
    check_record(record, reduction=result.reduction, precision=result.precision)
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
            "method": result.attribution,
            "objectives": list(result.objectives),
            "targets": np.asarray(result.targets).tolist(),
        },
    }
    return csv_with_provenance(result.similarity, header)


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




def _check_ranking_record(record: Mapping[str, object], ranking: MethodRanking) -> None:
    """The record must name the model and the image, and not contradict the ranking's options."""
    model, image = record.get("model"), record.get("image")
    if not isinstance(model, Mapping) or "name" not in model or not isinstance(image, Mapping) or "sha256" not in image:
        raise InvalidInputError("record must carry the model's name and the image's sha256 "
                                "(build it with saliency_core.figures.provenance.provenance)")
    target = record.get("target")
    if isinstance(target, Mapping) and target.get("index") is not None and int(target["index"]) != ranking.target:
        raise InvalidInputError(f"the record's target {target['index']} is not the ranking's {ranking.target}")
    saliency = record.get("saliency")
    if isinstance(saliency, Mapping):
        for name in ("reduction", "precision"):
            claimed = saliency.get(name)
            if claimed is not None and claimed != getattr(ranking, name):
                raise InvalidInputError(f"the record says {name}={claimed!r} but the ranking was computed with "
                                        f"{name}={getattr(ranking, name)!r}")


def _plain(value: object) -> object:
    """JSON-ready: numpy values as numbers, tensors and other objects as text, NaN as None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def ranking_header(ranking: MethodRanking, record: Mapping[str, object]) -> dict[str, object]:
    """The provenance of a ranking download: ``record`` (from :func:`saliency_core.figures.provenance.provenance`), its
    ``saliency`` entry replaced by what each map is (method, citation, objective, what it explains, parameters), and
    the ranking's settings (steps, baseline, blur sigma, seed, target, reduction, precision, and each metric
    column's title, paper, better direction and parameters)."""
    _check_ranking_record(record, ranking)
    maps = {}
    for label, quantity in ranking.explains.items():
        method, objective = ranking.table.loc[ranking.table["map"] == label, ["method", "objective"]].iloc[0]
        spec = ATTRIBUTION_METHODS[method]
        maps[label] = {"method": method, "title": spec.title, "citation": spec.citation, "definition": spec.summary,
                       "objective": objective, "explains": quantity, "params": ranking.params[method]}
    return _plain({
        "export": "attribution methods ranked by deletion/insertion (RISE, BMVC 2018) and model randomisation "
                  "(Adebayo et al., NeurIPS 2018)",
        "read_with": "pandas.read_csv(path, comment='#')",
        **record,
        "saliency": {"reduction": ranking.reduction, "precision": ranking.precision, "maps": maps},
        "ranking": {"target": ranking.target, "steps": ranking.steps, "baseline": ranking.baseline,
                    "blur_sigma": ranking.blur_sigma, "seed": ranking.seed, "random_order": RANDOM_ORDER
                    if RANDOM_ORDER in ranking.curves else None, "randomisation": "all layers re-initialised "
                    "(the last stage of the cascading randomisation with this seed)",
                    "randomisation_errors": ranking.notes,
                    "metrics": {m.name: {"title": m.title, "citation": m.citation, "better": m.better,
                                       "params": m.defaults()}
                                for m in METRICS if m.name in ranking.table}},
    })


def ranking_csv(ranking: MethodRanking, record: Mapping[str, object]) -> bytes:
    """The ranking table as UTF-8 CSV, :func:`ranking_header` in leading ``# key: <JSON>`` lines.

    Read back with ``pandas.read_csv(f, comment="#")`` and
    :func:`saliency_core.figures.provenance.read_csv_provenance`.
    """
    return csv_with_provenance(ranking.table, ranking_header(ranking, record))


def ranking_json(ranking: MethodRanking, record: Mapping[str, object]) -> bytes:
    """The ranking as UTF-8 JSON: ``provenance`` (:func:`ranking_header`), ``table`` (one object per row,
    NaN as null) and ``curves`` (per map: fractions, deletion and insertion probabilities)."""
    doc = {
        "provenance": ranking_header(ranking, record),
        "table": _plain(ranking.table.to_dict(orient="records")),
        "curves": _plain({name: {"fractions": r.fractions, "deletion": r.deletion[0], "insertion": r.insertion[0]}
                          for name, r in ranking.curves.items()}),
    }
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=1).encode("utf-8")


def ranking_filename(image: str, model: str, target: int, ext: str = "csv") -> str:
    """``methods_ranking_<image>_<model>_target<k>.<ext>``; image and model reduced to ASCII letters,
    digits, "-" and "_" (at most 48 characters each), ``ext`` "csv" or "json"."""
    if ext not in ("csv", "json"):
        raise InvalidInputError(f'ext must be "csv" or "json", got {ext!r}')

    image, model = file_name_part(str(image)), file_name_part(str(model))
    return f"methods_ranking_{image or 'image'}_{model or 'model'}_target{int(target)}.{ext}"
