"""Plotly charts about maps: histograms, concentration and deletion/insertion curves; returned, never shown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import stats
from saliency_core.figures.figure_style import as_text, finish, float32_map, require_nonempty, template_text

__all__ = ["concentration_figure", "curves_figure", "histogram_figure", "intervals_figure", "values_histogram_figure"]


def histogram_figure(
    maps: Mapping[str, np.ndarray],
    *,
    bins: int = 50,
    log_y: bool = True,
    x_title: str = "value",
) -> go.Figure:
    """Overlaid, semi-transparent histograms of each map's values.

    maps : name -> (H, W) float array.
    bins : number of bins, shared by all maps (common edges from the global
        min to the global max) so the bars line up.
    log_y : log-scale counts; saliency values are heavy-tailed.
    Counts are computed here (via :func:`stats.histogram`) and drawn as
    bars, which keeps the figure small compared with sending every pixel.
    """
    require_nonempty(maps)
    zs = {name: float32_map(m, f"maps[{name!r}]", signed=True) for name, m in maps.items()}
    return _overlaid_histograms(zs, bins, x_title, "pixels", log_y)


def values_histogram_figure(values: Mapping[str, np.ndarray], *, bins: int = 40, x_title: str = "value",
                            y_title: str = "images", log_y: bool = False) -> go.Figure:
    """Overlaid histograms of 1-D values (one number per image, say), on shared bin edges.

    values : name -> (N,) float array; NaNs are left out.
    """
    require_nonempty(values, "values")
    clean = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in values.items()}
    clean = {name: v[np.isfinite(v)] for name, v in clean.items()}
    if not any(v.size for v in clean.values()):
        raise InvalidInputError("values: nothing finite to draw")
    return _overlaid_histograms({n: v for n, v in clean.items() if v.size}, bins, x_title, y_title, log_y)


def _overlaid_histograms(values: Mapping[str, np.ndarray], bins: int, x_title: str, y_title: str,
                         log_y: bool) -> go.Figure:
    value_range = (min(float(z.min()) for z in values.values()), max(float(z.max()) for z in values.values()))
    fig = go.Figure()
    for name, z in values.items():
        table = stats.histogram(z.reshape(1, -1), bins, value_range=value_range)
        start, end = table["bin_start"].to_numpy(), table["bin_end"].to_numpy()
        fig.add_trace(
            go.Bar(
                x=(start + end) / 2,
                y=table["count"].to_numpy(),
                width=end - start,
                customdata=np.stack([start, end], axis=-1),
                hovertemplate="[%{customdata[0]:.3g}, %{customdata[1]:.3g}): %{y}<extra>" + template_text(name)
                + "</extra>",
                name=name,
                opacity=0.55,
            )
        )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", dtick=1 if log_y else None)
    return finish(fig, None, barmode="overlay", bargap=0)


def concentration_figure(maps: Mapping[str, np.ndarray]) -> go.Figure:
    """Concentration curves (:func:`stats.concentration_curve`) of several maps.

    maps : name -> (H, W) float array, >= 0.
    The dashed diagonal is a uniform map; the higher a curve bows above it,
    the fewer pixels hold the saliency.
    """
    require_nonempty(maps)
    fig = go.Figure()
    for name, saliency in maps.items():
        x, y = stats.concentration_curve(float32_map(saliency, f"maps[{name!r}]"))
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                name=name,
                hovertemplate="top %{x:.0%} of pixels hold %{y:.1%}<extra>" + template_text(name) + "</extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0.0, 1.0],
            y=[0.0, 1.0],
            mode="lines",
            name="uniform",
            line=dict(dash="dash", color="gray"),
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(title_text="share of pixels (most salient first)", range=[0, 1])
    fig.update_yaxes(title_text="share of total saliency", range=[0, 1])
    return finish(fig, None)


def curves_figure(fractions: np.ndarray, curves: Mapping[str, np.ndarray], *, title: str | None = None,
                  x_title: str = "fraction of pixels", y_title: str = "target probability",
                  x_range: tuple[float, float] | None = (0.0, 1.0)) -> go.Figure:
    """Lines sharing one x axis, e.g. deletion or insertion curves (Petsiuk et al. 2018).

    fractions : (S,) x values in [0, 1]
    curves : name -> (S,) y values
    """
    x = np.asarray(fractions, dtype=np.float64)
    fig = go.Figure()
    for name, y in curves.items():
        y = np.asarray(y, dtype=np.float64)
        if y.shape != x.shape:
            raise InvalidInputError(f"curves[{name!r}]: expected shape {x.shape} like fractions, got {y.shape}")
        dash = "dot" if name.startswith("random") else None
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, line=dict(dash=dash),
                                 hovertemplate=f"{template_text(name)}<br>{template_text(x_title)} "
                                               "%{x:.3g}: %{y:.4f}<extra></extra>"))
    fig.update_xaxes(title_text=x_title, range=list(x_range) if x_range else None)
    fig.update_yaxes(title_text=y_title, rangemode="tozero")
    return finish(fig, title, height=380)


def intervals_figure(labels: Sequence[str], means: np.ndarray, lows: np.ndarray, highs: np.ndarray, *,
                     x_title: str, title: str | None = None, reference: str | None = None) -> go.Figure:
    """One row per label: the mean as a dot and its confidence interval as a bar, best row on top.

    labels : (K,) names (data: escaped); means, lows, highs : (K,) floats, NaN rows drawn without a dot.
    reference : a label drawn in grey (the random order a map has to beat).
    """
    means, lows, highs = (np.asarray(v, dtype=np.float64).ravel() for v in (means, lows, highs))
    if not len(labels) == means.size == lows.size == highs.size:
        raise InvalidInputError(f"labels, means, lows and highs must have one entry each per row, got "
                                f"{len(labels)}, {means.size}, {lows.size}, {highs.size}")
    names = [as_text(label) for label in labels]
    colours = ["#888888" if label == reference else "#1f77b4" for label in labels]
    fig = go.Figure(go.Scatter(
        x=means, y=names, mode="markers", marker=dict(size=10, color=colours),
        error_x=dict(type="data", symmetric=False, array=highs - means, arrayminus=means - lows, thickness=2),
        customdata=np.stack([lows, highs], axis=1),
        hovertemplate=f"%{{y}}<br>{template_text(x_title)} %{{x:.4f}}"
                      "<br>interval [%{customdata[0]:.4f}, %{customdata[1]:.4f}]<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text=x_title)
    return finish(fig, title, height=max(180, 60 + 40 * len(names)), showlegend=False)
