"""The HTML picture of a backtest or of the journal: price, entries and exits, equity, gaps.

Owns: `Chart` (what is drawn, built by backtest_report from a backtest or from the journal) and
`write_html(chart, path)`: one self-contained HTML file (plotly, with its JavaScript inside) with a
price panel per coin, every entry (triangles: up long, down short) and exit (crosses, labelled with
the exit's reason, green a winner, red a loser) at its time and price, the equity curve below,
and every gap in the data shaded across all panels with its length. Long series are thinned to
`MAX_POINTS` (each bucket keeps its low and its high, so spikes survive).
Must not: be imported by the bot's runtime (plotly is a development dependency: it is imported
here, only when a picture is drawn), compute trading figures, or read the store.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

MAX_POINTS = 20_000
_UTC = dt.timezone.utc


class PlotlyMissing(RuntimeError):
    """plotly is not installed: the picture cannot be drawn (the summary still can)."""


@dataclass(frozen=True)
class Marker:
    time_ms: int
    coin: str
    price: Decimal
    kind: str          # "entry" or "exit"
    side: str          # long or short (the position's)
    size: Decimal
    reason: str = ""   # an exit's rule (stop_loss, take_profit, trailing_stop, ...)
    pnl: Decimal | None = None


@dataclass(frozen=True)
class Chart:
    title: str
    prices: dict[str, Sequence[tuple[int, float | None]]]     # coin -> (time_ms, price); None: a break
    markers: Sequence[Marker] = ()
    equity: Sequence[tuple[int, float | None]] = ()
    equity_label: str = "equity (USDC)"
    gaps: Sequence[tuple[int, int]] = ()                       # (start_ms, end_ms): no data
    notes: Sequence[str] = field(default_factory=tuple)        # lines under the title


def write_html(chart: Chart, path: str | Path) -> Path:
    """Draw `chart` into one self-contained HTML file; PlotlyMissing without plotly."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError as exc:
        raise PlotlyMissing("plotly is not installed (pip install -r requirements-dev.txt)") from exc
    coins = list(chart.prices) or sorted({m.coin for m in chart.markers})
    rows = len(coins) + 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[3] * len(coins) + [2],
                        subplot_titles=[f"{coin} price" for coin in coins] + [chart.equity_label])
    for row, coin in enumerate(coins, 1):
        xs, ys = _thin(chart.prices.get(coin, ()))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{coin} price", line={"width": 1},
                                 connectgaps=False), row=row, col=1)
        _add_markers(fig, go, [m for m in chart.markers if m.coin == coin], coin, row)
    xs, ys = _thin(chart.equity)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="equity", line={"width": 1.5, "color": "#444"},
                             connectgaps=False), row=rows, col=1)
    for start_ms, end_ms in chart.gaps:
        fig.add_vrect(x0=_when(start_ms), x1=_when(end_ms), row="all", col=1, fillcolor="#d62728", opacity=0.15,
                      line_width=0, annotation_text=f"no data {duration_text(end_ms - start_ms)}",
                      annotation_position="top left")
    title = chart.title + "".join(f"<br><sup>{note}</sup>" for note in chart.notes)
    fig.update_layout(title={"text": title}, height=260 * rows + 160, hovermode="closest",
                      legend={"orientation": "h", "y": -0.08}, margin={"t": 90 + 18 * len(chart.notes)})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(out), include_plotlyjs=True, full_html=True)
    return out


def _add_markers(fig: Any, go: Any, markers: list[Marker], coin: str, row: int) -> None:
    entries = [m for m in markers if m.kind == "entry"]
    exits = [m for m in markers if m.kind == "exit"]
    if entries:
        fig.add_trace(go.Scatter(
            x=[_when(m.time_ms) for m in entries], y=[float(m.price) for m in entries], mode="markers",
            name=f"{coin} entries",
            marker={"size": 11, "symbol": ["triangle-up" if m.side == "long" else "triangle-down" for m in entries],
                    "color": ["#2ca02c" if m.side == "long" else "#d62728" for m in entries]},
            text=[f"entry {m.side} {m.size} at {m.price}" for m in entries], hoverinfo="text+x"), row=row, col=1)
    if exits:
        fig.add_trace(go.Scatter(
            x=[_when(m.time_ms) for m in exits], y=[float(m.price) for m in exits], mode="markers+text",
            name=f"{coin} exits", textposition="top center", textfont={"size": 10},
            text=[m.reason for m in exits],
            marker={"size": 10, "symbol": "x",
                    "color": ["#2ca02c" if (m.pnl or 0) > 0 else "#d62728" for m in exits]},
            hovertext=[f"exit {m.side} {m.size} at {m.price}: {m.reason}"
                       + (f", pnl {m.pnl:.2f}" if m.pnl is not None else "") for m in exits],
            hoverinfo="text+x"), row=row, col=1)


def _thin(points: Sequence[tuple[int, float | None]]) -> tuple[list[dt.datetime | None], list[float | None]]:
    """x (UTC datetimes) and y for plotly, at most about MAX_POINTS: each bucket keeps its low and its
    high in time order; a None (a gap) is always kept so the line breaks there."""
    if len(points) > MAX_POINTS:
        per = -(-len(points) // (MAX_POINTS // 2))
        kept: list[tuple[int, float | None]] = []
        for start in range(0, len(points), per):
            bucket = points[start:start + per]
            values = [p for p in bucket if p[1] is not None]
            breaks = [p for p in bucket if p[1] is None]
            if values:
                low = min(values, key=lambda p: p[1])  # type: ignore[arg-type, return-value]
                high = max(values, key=lambda p: p[1])  # type: ignore[arg-type, return-value]
                kept += sorted({low, high} | set(breaks), key=lambda p: p[0])
            else:
                kept += breaks
        points = kept
    return [_when(t) for t, _ in points], [v for _, v in points]


def _when(time_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(time_ms / 1000, _UTC)


def duration_text(ms: int) -> str:
    seconds = int(ms // 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
