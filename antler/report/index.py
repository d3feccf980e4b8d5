"""Index pages: ``index.html`` of a result folder, with every test, its files and a sweep chart."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import plotly.graph_objects as go

from antler.report.html import TEMPLATE, figure_div, page
from antler.report.spec import IndexSpec
from antler.results.tables import Results, TestResult, load

_NUMBER = re.compile(r"^[-+]?[0-9]*\.?[0-9]+")


def varying_keys(results: Results) -> list[str]:
    """Varying_keys lists the test ID keys whose values differ between tests, in ID order."""
    values: dict[str, set[str]] = {}
    for test in results.values():
        for k, v in test.id.items():
            values.setdefault(k, set()).add(v)
    return [k for k, vs in values.items() if len(vs) > 1 or any(k not in t.id for t in results.values())]


def _sort_key(value: str) -> tuple[int, float, str]:
    # Sweep values like 20mbit, 50mbit, 100mbit sort by number, not as text.
    m = _NUMBER.match(value)
    return (0, float(m.group()), value) if m else (1, 0.0, value)


def flows_of(test: TestResult) -> pd.DataFrame:
    """Flows_of returns a test's flows.parquet, or analyses the test when there is none."""
    path = test.path / "flows.parquet"
    if path.exists():
        return pd.read_parquet(path)
    from antler.report.analyze import analyze

    return analyze(test).flows


def group_key(keys: list[str], spec: IndexSpec) -> str:
    """Group_key is the ID key the index groups tests by: ``spec.group_by``, else the first varying key."""
    return spec.group_by or (keys[0] if keys else "")


def compare_figure(results: Results, spec: IndexSpec) -> go.Figure | None:
    """Compare_figure charts one flow metric against the swept ID key, one series per flow and other keys.

    The x key is ``spec.x``, else the first varying key the page does not
    group by (the only one, when one key varies), so a two-key sweep draws
    a line per flow and group value. None when there is nothing swept to
    compare.
    """
    keys = varying_keys(results)
    group_by = group_key(keys, spec)
    x = spec.x or next((k for k in keys if k != group_by), keys[0] if keys else "")
    if not x or len(results) < 2:
        return None
    others = [k for k in keys if k != x]
    pattern = re.compile(spec.flow)
    rows = []
    for test in results.values():
        flows = flows_of(test)
        if spec.compare not in flows.columns:
            continue
        flows = flows[flows["flow"].map(lambda f: pattern.search(f) is not None) & flows[spec.compare].notna()]
        for flow, value in zip(flows["flow"], flows[spec.compare], strict=True):
            series = " ".join([str(flow), *(f"{k}={test.id.get(k, '')}" for k in others)])
            rows.append({"series": series, "x": test.id.get(x, ""), "y": float(value)})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    order = sorted(df["x"].unique(), key=_sort_key)
    fig = go.Figure()
    for name, g in df.groupby("series", sort=True):
        g = g.set_index("x").reindex([v for v in order if v in set(g["x"])])
        fig.add_trace(go.Scatter(x=list(g.index), y=g["y"].to_numpy(), name=str(name), mode="lines+markers"))
    fig.update_layout(
        title={"text": f"{spec.compare} vs {x}"},
        template=TEMPLATE,
        height=500,
        xaxis={"title": {"text": x}, "type": "category", "categoryorder": "array", "categoryarray": order},
        yaxis={"title": {"text": spec.compare}, "rangemode": "tozero"},
    )
    return fig


def index_html(result_dir: Path, spec: IndexSpec) -> tuple[str, go.Figure | None]:
    """Index_html returns the index page of a result folder and its comparison figure."""
    results = load(result_dir)
    group_by = group_key(varying_keys(results), spec)
    groups: dict[str, list[tuple[str, TestResult]]] = {}
    for key, test in results.items():
        groups.setdefault(test.id.get(group_by, "") if group_by else "", []).append((key, test))
    parts = []
    fig = compare_figure(results, spec)
    if fig is not None:
        parts.append(figure_div(fig))
    for value in sorted(groups, key=_sort_key):
        if group_by:
            parts.append(f"<h2>{html.escape(group_by)} = {html.escape(value)}</h2>")
        for _key, test in groups[value]:
            status = str(test.meta.get("status", ""))
            ident = test.id_text
            links = []
            for f in sorted(p for p in test.path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                rel = f.relative_to(result_dir).as_posix()
                links.append(f'<a href="{quote(rel)}">{html.escape(f.relative_to(test.path).as_posix())}</a>')
            swept = test.meta.get("swept") or {}
            applied = " · ".join(f"{html.escape(str(k))} = {html.escape(str(v))}" for k, v in swept.items())
            parts.append(
                f"<h3>{html.escape(ident)} <small>({html.escape(status)})</small></h3>"
                + (f"<p class='swept'>{applied}</p>" if applied else "")
                + f"<p class='files'>{' · '.join(links)}</p>"
            )
    return page("Results", "".join(parts), f"{len(results)} test{'s' if len(results) != 1 else ''}"), fig


def write_index(result_dir: Path, spec: IndexSpec, name: str = "index.html") -> Path:
    """Write_index writes the result folder's index page."""
    text, _ = index_html(result_dir, spec)
    path = result_dir / name
    with open(path, "x") as f:
        f.write(text)
    return path
