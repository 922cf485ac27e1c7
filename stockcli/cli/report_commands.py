"""`stockcli report` (tables, JSON or a self-contained HTML file) and `stockcli serve` (the dashboard)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from stockcli import formats
from stockcli.cli import output
from stockcli.cli.state import state

if TYPE_CHECKING:
    from stockcli.services.report import Report

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def sparkline(values: Sequence[float], predicted: float | None = None) -> str:
    """Unicode blocks for `values`, then an arrow and the predicted value's block on the same scale."""
    closes = [v for v in values if math.isfinite(v)]
    ahead = [predicted] if predicted is not None and math.isfinite(predicted) else []
    scale = closes + ahead
    if not scale:
        return ""
    low, high = min(scale), max(scale)
    span = high - low

    def block(value: float) -> str:
        if span == 0:
            return SPARK_BLOCKS[len(SPARK_BLOCKS) // 2]
        return SPARK_BLOCKS[min(len(SPARK_BLOCKS) - 1, int((value - low) / span * len(SPARK_BLOCKS)))]

    return "".join(map(block, closes)) + "".join(" → " + block(v) for v in ahead)


def _text(value: Any) -> str:
    """Stored text for a Rich cell: markup in it is shown, never interpreted."""
    return "" if value is None else escape(str(value))


def _signed(value: float) -> str:
    """A signed percentage; one that rounds to zero shows no sign."""
    text = f"{value * 100:+.1f}%"
    return "0.0%" if float(text[:-1]) == 0 else text


def _interval_source(row: Any) -> str:
    """The served interval source with its Winkler 95% skill against GARCH, e.g. "har_range +1.2%"."""
    if row.interval_source is None:
        return "-"
    skill = row.interval_skill_vs_garch
    return _text(row.interval_source) + ("" if skill is None else f" {_signed(skill)}")


def _improvement(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value * 100:+.2f}%"
    return f"{value * 100:+.2f}% ({low * 100:+.2f}% to {high * 100:+.2f}%)"


def _when(value: Any, pattern: str = "%Y-%m-%d %H:%M") -> str:
    return value.strftime(pattern) if value else "-"


PREDICTION_COLUMNS: tuple[output.Column, ...] = (
    ("Ticker", lambda p: _text(p.ticker) + (" (unseen)" if p.unseen else "")),
    ("Base date", lambda p: p.base_date.isoformat()),
    ("Base close", lambda p: formats.number(p.base_close)),
    ("Predicted close", lambda p: formats.number(p.predicted_close)),
    ("Change %", lambda p: "-" if p.change is None else f"{p.change * 100:+.2f}%"),
    ("80% interval", lambda p: output.band(p.lower_80, p.upper_80)),
    ("95% interval", lambda p: output.band(p.lower_95, p.upper_95)),
    ("P(up)", lambda p: formats.percent(p.p_up, 0)),
    ("Served", lambda p: output.fmt_served(p.source, p.p_value, p.interval_source)),
    ("Target date", lambda p: p.target_date.isoformat()),
    ("Model", lambda p: f"v{_text(p.model_version)}"),
)


def _predicted(closes: Any) -> float | None:
    return closes.prediction.predicted_close if closes.prediction else None


CLOSES_COLUMNS: tuple[output.Column, ...] = (
    ("Ticker", lambda s: _text(s.ticker)),
    ("Closes → predicted", lambda s: sparkline(s.closes, _predicted(s))),
    ("Last close", lambda s: formats.number(s.closes[-1]) if s.closes else "-"),
    ("Predicted", lambda s: formats.number(_predicted(s))),
)
PERFORMANCE_COLUMNS: tuple[output.Column, ...] = (
    ("Ticker", lambda r: _text(r.ticker)),
    ("Sessions", lambda r: str(r.sessions)),
    ("MAPE %", lambda r: formats.percent(r.mape)),
    ("MAE", lambda r: formats.number(r.mae)),
    ("Naive MAE", lambda r: formats.number(r.naive_mae)),
    ("Direction %", lambda r: formats.percent(r.directional_accuracy, 1)),
    ("Skill vs naive %", lambda r: "-" if r.skill is None else _signed(r.skill)),
    ("80% cover", lambda r: formats.percent(r.coverage_80, 0)),
    ("95% cover", lambda r: formats.percent(r.coverage_95, 0)),
    ("Intervals (W95 vs GARCH)", _interval_source),
    (
        "Status",
        lambda r: (
            "WORSE THAN NAIVE" if r.worse_than_naive else ("ok" if r.enough_samples else "few sessions")
        ),
    ),
)
MODEL_COLUMNS: tuple[output.Column, ...] = (
    ("Version", lambda m: f"v{_text(m.version)}"),
    ("Aliases", lambda m: _text(", ".join(m.aliases) or "-")),
    ("Test metrics", lambda m: _text(formats.format_metrics(m.test_metrics))),
    ("Dataset", lambda m: _text(m.dataset_run_id or "-")),
    ("Created", lambda m: _when(m.created_at)),
)
RUN_COLUMNS: tuple[output.Column, ...] = (
    ("#", lambda r: str(r.id)),
    ("Command", lambda r: _text(r.command)),
    ("As of", lambda r: r.as_of.isoformat() if r.as_of else "-"),
    ("Status", lambda r: _text(r.status)),
    ("Started", lambda r: _when(r.started_at, "%Y-%m-%d %H:%M:%S")),
    ("Duration s", lambda r: formats.number(r.duration_s, 1)),
    ("Error", lambda r: _text("; ".join(text for text in (r.error, *r.warnings) if text))),
)


def _values(p: Any) -> str:
    return " / ".join(formats.number(v, 4) for v in (p.candidate_value, p.production_value, p.naive_value))


PROMOTION_COLUMNS: tuple[output.Column, ...] = (
    ("Decided", lambda p: _when(p.decided_at)),
    ("Candidate", lambda p: f"v{_text(p.candidate_version)}"),
    ("Production", lambda p: f"v{_text(p.production_version)}" if p.production_version else "-"),
    ("Metric", lambda p: _text(p.metric)),
    ("Candidate / production / naive", _values),
    ("p-value", lambda p: output.p_value(p.p_value)),
    ("Improvement (95% CI)", lambda p: _improvement(p.improvement, p.improvement_low, p.improvement_high)),
    ("Decision", lambda p: ("promoted" if p.promoted else "kept") + (" (dry run)" if p.dry_run else "")),
    ("Reason", lambda p: _text(p.reason)),
)


def render_tables(report: Report) -> None:
    """Every table of `stockcli report`, in order, then the report's notes as warnings."""
    production = f"v{report.production_version}" if report.production_version else "none known"
    output.info(
        f"stockcli report{' as of ' + report.as_of.isoformat() if report.as_of else ''} · production model {production}"
    )
    output.records(
        "Latest predictions (next trading session)",
        PREDICTION_COLUMNS,
        report.predictions,
        caption=(
            "Served: the point forecast (the model where it beat the naive forecast significantly, else the "
            "last close; p: that test's p-value) / the interval source (the incumbent, the blend by default, "
            "unless another candidate beat it in a family-corrected test)."
            if report.predictions
            else "No predictions yet: run `stockcli daily`."
        ),
        secondary=["Base close", "Base date", "Model", "80% interval", "Change %", "P(up)"],
    )
    output.records(
        f"Recent closes (last {max((len(s.closes) for s in report.recent_closes), default=0)} sessions) → prediction",
        CLOSES_COLUMNS,
        report.recent_closes,
        secondary=["Last close", "Predicted"],
    )
    output.records(
        f"Live performance over the last {report.window_sessions} scored sessions",
        PERFORMANCE_COLUMNS,
        report.performance,
        caption=None if report.performance else "No matured predictions scored yet.",
        secondary=["MAE", "Naive MAE", "Sessions", "MAPE %", "Direction %"],
        text=["Intervals (W95 vs GARCH)"],
    )
    output.records(
        "Registered model versions",
        MODEL_COLUMNS,
        report.models,
        caption=None if report.models else "No model versions to show.",
        secondary=["Dataset", "Created"],
        text=["Test metrics"],
    )
    output.records(
        "Recent runs", RUN_COLUMNS, report.runs, secondary=["Started", "#", "Duration s"], text=["Error"]
    )
    output.records(
        "Recent promotion decisions",
        PROMOTION_COLUMNS,
        report.promotions,
        secondary=[
            "Candidate / production / naive",
            "Decided",
            "Metric",
            "Improvement (95% CI)",
            "Production",
        ],
        text=["Reason"],
    )
    render_risk(report)
    for note in report.notes:
        output.warn(note)


def render_risk(report: Report) -> None:
    """The compact risk table: VaR and ES (as losses of a long position) 1 and 5 sessions ahead, and
    the Basel zone of each horizon's 99% VaR over the risk window."""
    if not report.risk:
        return
    output.table(
        "Risk (long position)",
        ["Ticker", "Horizon", "VaR 95%", "VaR 99%", "ES 95%", "ES 99%", "Zone"],
        (
            [
                _text(r.ticker),
                str(r.horizon),
                *("-" if v is None else f"{v:.2%}" for v in (r.var_95, r.var_99, r.es_95, r.es_99)),
                r.zone or "-",
            ]
            for r in report.risk
        ),
        caption="Horizon: sessions ahead. Zone: Basel traffic light of the 99% VaR's exceptions (- : too few "
        "scored forecasts yet).",
    )


def report(
    ctx: typer.Context,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", metavar="FILE", dir_okay=False, help="Also write a self-contained HTML report to FILE."
        ),
    ] = None,
) -> None:
    """Latest predictions, live performance, model versions, runs and promotions (read-only)."""
    from stockcli.services.dashboard import write_report_html
    from stockcli.services.report import html_report_target
    from stockcli.services.report import report as report_service

    cli_state = state(ctx)
    settings = cli_state.settings()
    if html is not None:
        html_report_target(settings, html)  # a refused path fails before any work
    as_of = cli_state.as_of(settings) if cli_state.as_of_text else None
    result = report_service(settings, as_of=as_of)
    if html is not None:
        write_report_html(settings, result, html)
    if cli_state.json:
        closes = [{"ticker": s.ticker, "dates": s.dates, "closes": s.closes} for s in result.recent_closes]
        output.emit("report", result, recent_closes=closes, **({} if html is None else {"html": str(html)}))
        return
    render_tables(result)
    if html is not None:
        output.info(f"Wrote the HTML report to {html}.")


def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback only by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """A read-only dashboard in the browser: predictions, chart, performance, production model."""
    from stockcli import extras
    from stockcli.services import dashboard

    extras.require("web", "`stockcli serve`")

    cli_state = state(ctx)
    settings = cli_state.settings()
    dashboard.check_address(host, port)
    if host not in LOOPBACK_HOSTS:
        output.warn(
            f"Listening on {host}: the dashboard has no login; anyone who can reach this port can read it."
        )
    shown = f"[{host}]" if ":" in host else host
    output.info(f"Serving the dashboard on http://{shown}:{port}/ (read-only; Ctrl+C stops it).")
    dashboard.serve(settings, host=host, port=port, verbose=cli_state.verbose)
