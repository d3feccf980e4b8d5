"""Static images of the charts (PNG, SVG, PDF), drawn with matplotlib from the plotly figures.

Plotly's own image export (kaleido) needs a browser download, which this
project's machines cannot do, so each image is the page's figure drawn again
(no pyplot, no GUI), its series decimated to IMAGE_POINTS per flow
(:func:`antler.report.decimate.decimate`). Matplotlib is imported on first
use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from antler.report.decimate import decimate

if TYPE_CHECKING:
    import plotly.graph_objects as go

IMAGE_SUFFIXES = (".png", ".svg", ".pdf")
"""IMAGE_SUFFIXES are the chart outputs drawn as static images (any other but .html is refused)."""
IMAGE_POINTS = 4000
"""IMAGE_POINTS caps the points per flow in a static image (min/max per bucket, as in the pages)."""


def _mpl_figure(rc: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure

    size = rc.get("figure.figsize", (12.8, 7.2))
    dpi = rc.get("figure.dpi", 100)
    return Figure(figsize=size, dpi=dpi)


def _fit(m: Any, ax: Any, twin: Any = None, legend: Any = None) -> None:
    """_fit sizes the margins around the axes from the text in them, and puts a figure legend below.

    The margins hold the tick labels, axis labels and title, measured once
    from their fonts. Matplotlib's constrained layout finds the same margins
    by laying out every artist, which took half of an image's time.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.font_manager import FontProperties

    renderer = FigureCanvasAgg(m).get_renderer()
    pt = 72 / m.dpi  # points per pixel
    rc: Any = mpl.rcParams

    def extent(strings: list[str], size: str) -> tuple[float, float]:
        """Return the widest and the tallest of the strings, in points."""
        prop = FontProperties(size=rc[size])
        w = h = 0.0
        for s in filter(None, strings):
            sw, sh, _ = renderer.get_text_width_height_descent(s, prop, ismath=False)
            w, h = max(w, sw * pt), max(h, sh * pt)
        return w, h

    def labels(axis: Any) -> list[str]:
        lo, hi = sorted(axis.get_view_interval())
        out = []
        for locs, formatter in ((axis.get_majorticklocs(), axis.get_major_formatter()),
                                (axis.get_minorticklocs(), axis.get_minor_formatter())):  # fmt: skip
            out += formatter.format_ticks([v for v in locs if lo <= v <= hi])
        return out

    edge = 6.0  # points kept clear at the figure's edges
    # A line of text is as tall as "lp" (ascent and descent), as matplotlib lays it out.
    label = extent(["lp"], "axes.labelsize")[1] + rc["axes.labelpad"]

    def side(a: Any) -> float:
        ticks = extent(labels(a.yaxis), "ytick.labelsize")[0] + rc["ytick.major.size"] + rc["ytick.major.pad"]
        return edge + ticks + (label if a.get_ylabel() else 0)

    x_w, x_h = extent(labels(ax.xaxis), "xtick.labelsize")[0], extent(["lp"], "xtick.labelsize")[1]
    left = max(side(ax), edge + x_w / 2)  # the end ticks' labels are centred on the axes' edges
    right = max(side(twin) if twin is not None else edge, edge + x_w / 2)
    title = extent(["lp"], "axes.titlesize")[1] + rc["axes.titlepad"] if ax.get_title() else 0
    width, height = m.get_size_inches() * 72
    below = edge
    if legend is not None:
        legend.set_bbox_to_anchor((0.5, edge / height), transform=m.transFigure)
        below = legend.get_window_extent(renderer).y1 * pt + edge  # its top, and a gap
    bottom = below + x_h + rc["xtick.major.size"] + rc["xtick.major.pad"] + (label if ax.get_xlabel() else 0)
    m.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - (edge + title) / height
    )


def matplotlib_timeseries(fig: go.Figure, path: Path, rc: Mapping[str, Any]) -> None:
    """Draw the plotly figure's traces as a static image (no pyplot, no GUI)."""
    import matplotlib as mpl

    with mpl.rc_context(cast(Any, dict(rc))):
        m = _mpl_figure(rc)
        ax = m.subplots()
        # The right axis only where the page has one (delay beside goodput).
        ax2 = ax.twinx() if any(tr.yaxis == "y2" for tr in fig.data) else None
        colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
        # The queue panel (axes y3 and y4) is on the page only; the image keeps goodput and delay.
        for i, tr in enumerate(tr for tr in fig.data if tr.yaxis not in ("y3", "y4")):
            if tr.visible == "legendonly":
                continue  # the page's hidden traces (raw samples) are not in the image
            color = colors[i % len(colors)]
            x, y = np.asarray(tr.x, dtype=float), np.asarray(tr.y, dtype=float)
            # An image is ~1300 px wide: more points than a few per pixel only cost time.
            idx = decimate(x, y, IMAGE_POINTS) if len(x) else np.arange(0)
            x, y = x[idx], y[idx]
            on = ax2 if tr.yaxis == "y2" and ax2 is not None else ax
            if tr.mode == "markers":
                on.scatter(x, y, s=2, color=color, label=tr.name, rasterized=True)
            else:
                on.plot(x, y, lw=1.2, color=color, label=tr.name, marker="o" if len(x) <= 4 else None, ms=3)
        layout = fig.layout
        ax.set_title(layout.title.text or "")
        ax.set_xlabel(layout.xaxis.title.text or "")
        ax.set_ylabel(layout.yaxis.title.text or "")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0, top=layout.yaxis.range[1] if layout.yaxis.range else None)
        if ax2 is not None:
            ax2.set_ylabel(layout.yaxis2.title.text or "")
            ax2.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        # A rig's changes (antler.report.events): the page's dotted lines, with their labels.
        for shape, note in zip(layout.shapes or (), layout.annotations or (), strict=False):
            ax.axvline(float(shape.x0), ls=":", lw=1, color="#555")
            ax.text(
                float(shape.x0),
                1,
                f" {note.text}",
                rotation=90,
                va="top",
                ha="right",
                fontsize="x-small",
                transform=ax.get_xaxis_transform(),
            )
        handles = [h for a in (ax, ax2) if a is not None for h in a.get_legend_handles_labels()[0]]
        legend = (
            m.legend(handles=handles, loc="lower center", ncols=min(len(handles), 4), fontsize="small")
            if handles
            else None
        )
        _fit(m, ax, ax2, legend)
        _save_new(m, path)


def matplotlib_fct(fig: go.Figure, path: Path, rc: Mapping[str, Any]) -> None:
    """Draw the plotly FCT figure as a static image: log length axis with plain numbers."""
    import matplotlib as mpl
    from matplotlib.ticker import FuncFormatter, NullFormatter

    with mpl.rc_context(cast(Any, dict(rc))):
        m = _mpl_figure(rc)
        ax = m.subplots()
        for tr in fig.data:
            ax.scatter(tr.x, tr.y, s=12, label=tr.name)
        ax.set_xscale("log")
        # Plain numbers (100, 1,000, 1,560,000), as on the page: the default
        # 10^x labels start matplotlib's TeX-like parser, 0.15 s on first use.
        # With fewer than two powers of ten in view the minor ticks are labelled too.
        plain = FuncFormatter(_plain_number)
        ax.xaxis.set_major_formatter(plain)
        ax.autoscale_view()
        lo, hi = (math.log10(v) for v in ax.get_xlim())
        ax.xaxis.set_minor_formatter(plain if math.floor(hi) - math.ceil(lo) < 1 else NullFormatter())
        layout = fig.layout
        ax.set_title(layout.title.text or "")
        ax.set_xlabel(layout.xaxis.title.text or "")
        ax.set_ylabel(layout.yaxis.title.text or "")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
        if fig.data:
            ax.legend(fontsize="small")
        _fit(m, ax)
        _save_new(m, path)


def _plain_number(v: float, _pos: int | None = None) -> str:
    return f"{v:,.0f}" if abs(v) >= 1 else f"{v:g}"


def _save_new(m: Any, path: Path) -> None:
    fmt = path.suffix.lstrip(".")
    # PNG's fastest deflate level: a fifth of the encoding time for a file a seventh larger.
    extra = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
    with open(path, "xb") as f:
        m.savefig(f, format=fmt, **extra)
