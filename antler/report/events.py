"""A rig's changes on the time series: a labelled vertical line at each change a schedule made.

The rig's schedule (antler/rig/schedule.py) writes ``rig_events.parquet``:
one row per change, with when it was asked for and when it took effect
(UTC). On the chart's axis (seconds since the test's first flow began,
``Analysis.t0``) each step is one dotted line at the time it took effect,
labelled with the step (``rate 10 Mbit/s``); the static image draws the
same lines (:func:`antler.report.images.matplotlib_timeseries` reads them
from the figure's shapes).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pyarrow.parquet as pq

EVENTS_FILE = "rig_events.parquet"
"""EVENTS_FILE is the test's file of a rig's changes."""


def rig_events(directory: Path, t0: pd.Timestamp | None) -> list[tuple[float, str]]:
    """Return each step's (seconds since t0 it took effect, label), first change of a step only; [] without any."""
    path = directory / EVENTS_FILE
    if t0 is None or not path.exists():
        return []
    df = pq.read_table(path).to_pandas()
    if df.empty:
        return []
    first = df.sort_values("took_effect").groupby(["at_s", "label"], sort=True, as_index=False).first()
    return [(float((r.took_effect - t0).total_seconds()), str(r.label)) for r in first.itertuples()]


def draw_events(fig: go.Figure, events: list[tuple[float, str]]) -> None:
    """Add a dotted vertical line with its label at each event (seconds on the x axis)."""
    for t_s, text in events:
        fig.add_vline(
            x=t_s,
            line={"dash": "dot", "width": 1, "color": "#555"},
            annotation={"text": text, "textangle": -90, "font": {"size": 10}},
            annotation_position="top left",
        )
