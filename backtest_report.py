"""What `--backtest` and `--report` print and draw.

Owns: `format_summary(result)` (trades, win rate, PnL, fees, max drawdown, exposure, the last
price, gaps, how fills were priced, then the journal's table), the `Chart` of a backtest (sampled
prices, mark-to-market equity, gaps) and of the live journal (fill prices, realized equity), the
default HTML paths (`reports/` beside the config file), and the two command-line entries:
`backtest_command` and `report_command`. A missing plotly is one line; the summary still prints.
Must not: trade (backtest.py runs the bot's code), or write anything but the HTML file.
"""
from __future__ import annotations

import datetime as dt
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import backtest
from charts import Chart, Marker, PlotlyMissing, duration_text, write_html
from report import Report, format_report, journal_report
from settings import Settings
from state import StateError, StateStore

SUMMARY_ROWS = 30  # closed trades listed by the backtest's summary (all of them are in the picture)


def _utc(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def format_summary(result: backtest.BacktestResult) -> str:
    r = result.report
    rate = r.win_rate
    span = result.span_ms
    lines = [
        f"backtest: {len(result.files)} file(s), {result.frames} frames ({result.trade_frames} with trades), "
        f"{_utc(result.first_ms)} to {_utc(result.last_ms)} UTC ({duration_text(span)} recorded), "
        f"in {result.wall_s:.2f} s ({result.frames_per_s:,.0f} frames/s)",
        f"trades: {len(r.trades)}  win rate: {'n/a' if rate is None else f'{rate * 100:.1f}%'}  "
        f"pnl: {r.gross_pnl:.2f}  fees: {r.fees:.4f}  net: {r.net_pnl:.2f} USDC",
        f"max drawdown: {result.max_drawdown:.2f} USDC  exposure: {duration_text(result.exposure_ms)}"
        + (f" ({result.exposure_ms / span * 100:.1f}% of the recorded time)" if span else ""),
        "last price: " + (", ".join(f"{coin} {px}" for coin, px in result.last_prices.items()) or "none (no trades)"),
    ]
    for pos in result.open_at_end:
        lines.append(f"open at the end: {pos.coin} {pos.side} {pos.size} at {pos.entry_px} "
                     f"(unrealized {pos.unrealized:+.2f}; net with it {result.net_pnl:.2f} USDC)")
    priced = ", ".join(f"{how} {n}" for how, n in sorted(result.priced.items())) or "no orders"
    lines.append(f"fills priced by: {priced}")
    lines.append(f"gaps (no frame for over {result.gap_after_s:g} s: the socket was down or the recording "
                 f"stopped): {len(result.gaps) or 'none'}")
    for gap in result.gaps:
        lines.append(f"  {_utc(gap.start_ms)} to {_utc(gap.end_ms)} ({duration_text(gap.end_ms - gap.start_ms)}): "
                     "no prices, no exits could fire")
    if result.handler_errors:
        lines.append(f"errors in the trading code: {result.handler_errors} (logged); the run went on as the bot would")
    lines.append(format_report(r, "closed trades (paper fills, fees included):", max_rows=SUMMARY_ROWS))
    return "\n".join(lines)


def _markers(report: Report) -> list[Marker]:
    out = []
    for t in report.trades:
        out.append(Marker(t.opened_ms, t.coin, t.entry_px, "entry", t.side, t.size))
        out.append(Marker(t.closed_ms, t.coin, t.exit_px, "exit", t.side, t.size, t.exit_reason, t.pnl - t.fees))
    return out


def backtest_chart(result: backtest.BacktestResult) -> Chart:
    markers = _markers(result.report)
    markers += [Marker(p.opened_ms, p.coin, p.entry_px, "entry", p.side, p.size) for p in result.open_at_end]
    r = result.report
    notes = [f"{len(r.trades)} trades, net {r.net_pnl:.2f} USDC, max drawdown {result.max_drawdown:.2f}, "
             f"{_utc(result.first_ms)} to {_utc(result.last_ms)} UTC; fills: "
             + (", ".join(f"{k} {v}" for k, v in sorted(result.priced.items())) or "none")]
    if result.gaps:
        notes.append(f"{len(result.gaps)} gap(s) in the recording (shaded): no frame for over {result.gap_after_s:g} s")
    return Chart(title="hlbot backtest", prices={c: list(p) for c, p in result.prices.items()}, markers=markers,
                 equity=list(result.equity), equity_label="equity (USDC, mark-to-market, from 0)",
                 gaps=[(g.start_ms, g.end_ms) for g in result.gaps], notes=notes)


def journal_chart(store: StateStore, paper: bool) -> Chart | None:
    """The journal's fills as a picture: prices are the fills' (the journal holds no others)."""
    fills = [f for f in store.fills() if f["paper"] is paper]
    if not fills:
        return None
    report = journal_report(store, paper=paper)
    prices: dict[str, list[tuple[int, float | None]]] = {}
    for f in fills:
        prices.setdefault(str(f["coin"]), []).append((int(f["time_ms"]), float(f["px"])))  # type: ignore[arg-type]
    equity: list[tuple[int, float | None]] = [(int(fills[0]["time_ms"]), 0.0)]  # type: ignore[arg-type]
    total = Decimal(0)
    for t in report.trades:
        total += t.pnl - t.fees
        equity.append((t.closed_ms, float(total)))
    kind = "paper trading (dry run)" if paper else "live trading"
    return Chart(title=f"hlbot journal: {kind}", prices=prices, markers=_markers(report), equity=equity,
                 equity_label="realized equity (USDC, closed trades net of fees)",
                 notes=[f"{len(report.trades)} trades, net {report.net_pnl:.2f} USDC; prices are the fills' own"])


def default_html(settings: Settings, name: str) -> Path:
    folder = Path(settings.source).resolve().parent if settings.source else Path.cwd()
    return folder / "reports" / name


def _draw(chart: Chart, path: Path) -> None:
    try:
        written = write_html(chart, path)
    except PlotlyMissing as exc:
        print(f"html: not written: {exc}")
        return
    except OSError as exc:
        print(f"html: not written: cannot write {path} ({exc.strerror or exc})")
        return
    print(f"html: {written}")


def backtest_command(settings: Settings, files: list[str], html: str | None, use_book: bool) -> int:
    """`--backtest FILE...`: run, print the summary, draw the picture, print its path."""
    for name in files:
        if not Path(name).is_file():
            print(f"backtest: {name} is not a file", file=sys.stderr)
            return 2
    result = backtest.run(settings, files, use_book=use_book)
    print(format_summary(result))
    stamp = (dt.datetime.fromtimestamp(result.first_ms / 1000, dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
             if result.first_ms is not None else "empty")
    _draw(backtest_chart(result), Path(html) if html else default_html(settings, f"backtest-{stamp}.html"))
    return 0


def report_command(settings: Settings, html: str | None) -> int:
    """`--report [--html [PATH]]`: the journal as text, and as a picture when asked (`html` "": the default path)."""
    path = Path(settings.state.path)
    if not path.exists():
        print(f"no journal yet at {path}")
        return 0
    try:
        store = StateStore(str(path))
        store.open()
    except StateError as exc:
        print(f"state: {exc}", file=sys.stderr)
        return 2
    try:
        account = store.get("account")
        print(f"journal: {path}" + (f" (account {account} on {store.get('network')})" if account else ""))
        print(format_report(journal_report(store), "live trading:"))
        paper = journal_report(store, paper=True)
        if paper.fills:
            print()
            print(format_report(paper, "paper trading (dry run; fills simulated):"))
        if html is not None:
            _draw_journal(settings, store, html)
    finally:
        store.close()
    return 0


def _draw_journal(settings: Settings, store: StateStore, html: str) -> None:
    charts: list[tuple[str, Any]] = [("journal", journal_chart(store, paper=False)),
                                     ("journal-paper", journal_chart(store, paper=True))]
    drawn = [(name, chart) for name, chart in charts if chart is not None]
    if not drawn:
        print("html: not written: no fills in the journal")
    for name, chart in drawn:
        path = Path(html) if html and len(drawn) == 1 else \
            Path(html).with_name(f"{Path(html).stem}-{name}.html") if html else default_html(settings, f"{name}.html")
        _draw(chart, path)
