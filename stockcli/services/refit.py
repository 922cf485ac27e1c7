"""Scheduled refits of the statistical candidates, and the interval choice re-decided on live scores.

Markets move on from a version's training dates: `daily` refits each ticker's candidates every
`[forecasters] refit_sessions` sessions (a few tickers each session, so no run pays for all), and
re-decides their interval source on every candidate's out-of-sample scores over the trailing
`selection_sessions`, by the same family-corrected test as at promotion.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings

if TYPE_CHECKING:
    from stockcli.ml.selection import IntervalChoice

_log = logging.getLogger(__name__)


def refit_if_due(
    *, settings: Settings, engine: Engine, bundle: Any, through: date
) -> dict[str, dict[str, Any]]:
    """Refit the tickers due as of `through`, re-decide their interval choice, and return the refits in
    force (`refits_in_force`)."""
    from stockcli.clock import calendar_for
    from stockcli.db import serving
    from stockcli.db.bars import last_dates
    from stockcli.services.horizons import redecide_horizons
    from stockcli.services.runtime import checkpoint

    fitted_through = _version_fit_end(bundle)
    calendar = calendar_for(settings)
    every = int(settings.forecasters.refit_sessions)
    watchlist = list(settings.data.tickers)
    last = serving.last_fit_ends(engine, through)
    newest = {t: max(last.get(t, fitted_through), fitted_through) for t in watchlist}
    ages = {t: calendar.sessions_since(newest[t], through) for t in watchlist}
    # A ticker whose bar of `through` has not arrived waits for it; one without any bar is recorded
    # (`refit`), so that it does not hold a slot every session.
    newest_bar = last_dates(engine, watchlist, end=through)
    ready = [t for t in watchlist if newest_bar.get(t) in (None, through)]
    due = sorted((t for t in ready if ages[t] >= every), key=lambda t: (-ages[t], t))
    # A session's quota, whatever how many runs it takes: a re-run refits nothing more, and decides
    # again for the tickers refitted earlier that session (the same decisions, or the ones a run
    # stopped between its fits and its decisions did not write).
    done = sorted(t for t, end in last.items() if end == through)  # a ticker since dropped counts too
    due = due[: max(0, math.ceil(len(watchlist) / every) - len(done))]
    if due:
        refit(settings=settings, engine=engine, bundle=bundle, tickers=due, through=through)
        checkpoint(settings, "refit:after_fits")
    if decided := [*due, *(t for t in done if t in watchlist)]:
        version = str(bundle.version)
        redecide(settings=settings, engine=engine, model_version=version, tickers=decided, through=through)
        redecide_horizons(settings=settings, engine=engine, tickers=decided, through=through)
    return refits_in_force(engine=engine, bundle=bundle, through=through)


def refits_in_force(*, engine: Engine, bundle: Any, through: date) -> dict[str, dict[str, Any]]:
    """{candidate: {ticker: params}} of the newest refits on or before `through`, newer than the
    version's own fits."""
    from stockcli.db.serving import load_fits

    return load_fits(engine, since=_version_fit_end(bundle), through=through)


def refit(*, settings: Settings, engine: Engine, bundle: Any, tickers: list[str], through: date) -> None:
    """Fit every statistical candidate on each ticker's stored bars through `through` and record it."""
    from stockcli.db.bars import load_bars
    from stockcli.db.serving import load_fits, save_fits
    from stockcli.ml.forecasters import build_table, bundle_fits, fit_all, ticker_bars, with_market

    table = build_table(settings)
    market = settings.forecasters.har_market
    bars = load_bars(engine, with_market(tickers, market), start=settings.data.start, end=through)
    # Each fit starts from the ticker's last one, or the model version's (about half arch's iterations).
    before = bundle_fits(bundle.baselines if bundle is not None else None)
    for name, per_ticker in load_fits(engine, since=date.min, through=through).items():
        before.setdefault(name, {}).update(per_ticker)
    rows = []
    for ticker in tickers:
        frame = bars.get(ticker)
        fitted: dict[str, Any] = dict.fromkeys(table)
        if frame is not None and not frame.empty:
            previous = {name: (before.get(name) or {}).get(ticker) for name in table}
            try:
                fitted = fit_all(table, ticker_bars(bars, ticker, market), previous)
            except Exception as exc:  # one ticker's numerical failure must not stop the day's run
                _log.warning(
                    "Refit of %s failed (%s); its candidates fall back until the next refit.", ticker, exc
                )
        # Recorded even when nothing was fitted: the ticker waits its next turn, not every session.
        recorded = {
            "ticker": ticker,
            "fit_end": through,
            "fit_start": None if frame is None or frame.empty else frame.index[0].date(),
            "n_sessions": 0 if frame is None else len(frame),
        }
        rows += [{**recorded, "forecaster": name, "params": params} for name, params in fitted.items()]
    save_fits(engine, rows)


def redecide(
    *, settings: Settings, engine: Engine, model_version: str, tickers: list[str], through: date
) -> None:
    """Choose the interval source (and the P(up) source) of `tickers` again on the trailing window of
    their scored sessions; too few sessions keep the decision. The pooled choice "*" (unseen tickers)
    reads every ticker's rows, so it is re-decided once per refit interval, not every session."""
    from stockcli.clock import calendar_for
    from stockcli.db.predictions import scored_between
    from stockcli.db.serving import POOLED, load_selection, update_interval_choices
    from stockcli.ml.selection import ticker_incumbent
    from stockcli.ml.serving import stored_source

    config = settings.forecasters
    start = selection_start(settings, through)
    choices: dict[str, dict[str, Any]] = {}
    standing = load_selection(engine, model_version)
    pooled = standing.get(POOLED)
    last = pooled.window_end if pooled is not None else None
    pooled_source = stored_source(pooled, incumbent=config.incumbent_at(1), alpha=settings.promotion.alpha)
    if last is None or calendar_for(settings).sessions_since(last, through) >= config.refit_sessions:
        rows = own_rows(scored_between(engine, start=start, end=through), model_version)
        if choice := _decision(settings, rows, config.incumbent_at(1), pooled):
            choices[POOLED] = choice
            pooled_source = choice["interval_source"]
    # Each ticker against the pooled choice (`selection.ticker_incumbent`): decided after it.
    incumbent = ticker_incumbent(pooled_source, config.incumbent_at(1))
    for ticker in tickers:
        rows = own_rows(scored_between(engine, start=start, end=through, tickers=[ticker]), model_version)
        if choice := _decision(settings, rows, incumbent, standing.get(ticker)):
            choices[ticker] = choice
    if choices:
        update_interval_choices(engine, model_version=model_version, choices=choices)


def selection_start(settings: Settings, through: date) -> date:
    """The first session of the trailing `selection_sessions` window up to `through`."""
    from stockcli.clock import calendar_for

    sessions = settings.forecasters.selection_sessions
    return calendar_for(settings).sessions_back(through, sessions, otherwise=settings.data.start)


def decide_interval(
    settings: Settings,
    rows: Sequence[Mapping[str, Any]],
    incumbent: str,
    standing: tuple[str, int | None] | None = None,
    minimum: int | None = None,
    horizon: int = 1,
) -> tuple[IntervalChoice, list[date]] | None:
    """The interval choice on scored `rows` against `incumbent`, with the sessions it read; None (the
    `standing` decision, source and sessions read, stays) when they are fewer than `minimum`
    (default `min_selection_sessions`), or, with `keep_tested_choice`, when they only fail to reject the
    incumbent on fewer sessions than a standing challenger's test read (a shorter window's silence is
    no evidence against it; a full `selection_sessions` window decides alone)."""
    from stockcli.ml.metrics import candidate_loss_panels
    from stockcli.ml.selection import choose_interval_source

    config = settings.forecasters
    panels, dates = candidate_loss_panels(rows, config.metric)
    if len(dates) < (config.min_selection_sessions if minimum is None else minimum):
        return None
    alpha, order = settings.promotion.alpha, config.test_order
    choice = choose_interval_source(panels, incumbent=incumbent, alpha=alpha, order=order, horizon=horizon)
    standing_read = min(standing[1] or 0, config.selection_sessions) if standing else 0
    silent = standing is not None and choice.source == incumbent != standing[0]
    if config.keep_tested_choice and silent and len(dates) < standing_read:
        return None
    return choice, dates


def decide_p_up(
    settings: Settings, rows: Sequence[Mapping[str, Any]], horizon: int = 1, minimum: int = 0
) -> IntervalChoice:
    """The P(up) choice on scored `rows`: a candidate only where its Brier score beats the base rate's
    (each row's `detail["p_up"]`) by the one-sided test, Holm-corrected over the candidates, on at
    least `minimum` sessions that have the base rate's score (fewer: the base rate, untested)."""
    import numpy as np

    from stockcli.ml.metrics import brier_panels
    from stockcli.ml.selection import BASE_RATE, IntervalChoice, choose_interval_source

    panels = brier_panels(rows)
    base = panels.get(BASE_RATE)
    if base is None or int(np.isfinite(base).any(axis=1).sum()) < minimum:
        return IntervalChoice(source=BASE_RATE, p_value=None, skill=None)
    return choose_interval_source(
        panels, incumbent=BASE_RATE, alpha=settings.promotion.alpha, horizon=horizon
    )


def _decision(
    settings: Settings, rows: list[dict[str, Any]], incumbent: str, standing: Any
) -> dict[str, Any] | None:
    """The interval decision against `incumbent` (`standing`: the stored Selection, if any; it stands
    as a tested choice only if its test chose it, `serving.tested_choice`) and the P(up) decision
    against the base rate."""
    from stockcli.ml.serving import stored_source

    kept = None
    if (
        standing is not None
        and stored_source(standing, incumbent=incumbent, alpha=settings.promotion.alpha) != incumbent
    ):
        kept = (standing.interval_source, standing.n_sessions)
    decided = decide_interval(settings, rows, incumbent, kept)
    if decided is None:
        return None
    interval, dates = decided
    p_up = decide_p_up(settings, rows)
    return {
        "p_up_source": p_up.source,
        "p_up_p_value": p_up.p_value,
        "interval_source": interval.source,
        "interval_p_value": interval.p_value,
        "interval_skill": interval.skill,
        "window_start": min(dates),
        "window_end": max(dates),
        "n_sessions": len(dates),
    }


def own_rows(rows: list[dict[str, Any]], model_version: str) -> list[dict[str, Any]]:
    """One scored row per (session, ticker), the serving version's where it has one; rows of other
    versions lose the network's forecasts (another network's) but keep the statistical candidates'."""
    from stockcli.ml.forecasters import NETWORK

    chosen: dict[tuple[Any, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["target_date"], row["ticker"])
        if key not in chosen or str(row["model_version"]) == str(model_version):
            chosen[key] = row
    out = []
    for row in chosen.values():
        if str(row["model_version"]) != str(model_version):
            detail = {k: v for k, v in (row.get("detail") or {}).items() if k != "model"}
            for part in ("candidates", "p_up"):
                if part in detail:
                    detail[part] = {k: v for k, v in (detail[part] or {}).items() if k != NETWORK}
            row = {**row, "detail": detail}
        out.append(row)
    return out


def _version_fit_end(bundle: Any) -> date:
    baselines = bundle.baselines or {}
    value = baselines.get("fit_through") or baselines.get("garch_fit_through")
    return date.fromisoformat(value) if value else date.min
