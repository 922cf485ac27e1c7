"""Horizons after they are served: scored at maturity, re-decided at each refit, and risk-backtested.

Scoring also moves each horizon's adaptive conformal levels (`horizon_serving`, same transaction).
Forecasts h sessions ahead made on consecutive sessions share h - 1 daily returns, so their exceptions
are dependent: the risk and coverage tests of a horizon above 1 run on the non-overlapping subsample
(every h-th base session, counted back from the newest; `ml.risk.non_overlapping`), and the selection's
Diebold-Mariano tests on every session with a HAC lag of at least h - 1 (`ml.stats.paired_loss_test`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from stockcli.config import Settings

RiskTable = dict[int, dict[str, dict[str, Any]]]
"""{horizon: {ticker: the risk backtest's JSON (`RiskBacktest.to_json`)}}."""


def score_horizons(engine: Engine, *, through: date, settings: Settings) -> tuple[int, int]:
    """Score every horizon row whose target session's close is stored (on or before `through`), and
    move the adaptive levels of the horizons above 1, in one transaction. Returns (scored, pending)."""
    from stockcli.db import horizons as horizons_db

    found = horizons_db.unscored_horizons(engine, through=through)
    matured = [{**row, "actual_close": row["close"]} for row in found if _finite(row["close"])]
    if not matured:
        return 0, len(found)
    tickers = sorted({row["ticker"] for row in matured})
    serving = horizons_db.load_horizon_serving(engine, tickers)
    states = aci_states(serving, matured, settings.intervals.aci_gamma, settings.forecasters.incumbent_at)
    with engine.begin() as connection:
        horizons_db.mark_scored(connection, matured)
        horizons_db.save_horizon_serving(connection, states)
    return len(matured), len(found) - len(matured)


def aci_states(
    serving: Mapping[tuple[str, int], Mapping[str, Any]],
    matured: Sequence[Mapping[str, Any]],
    gamma: float,
    incumbent_at: Callable[[int], str],
) -> list[dict[str, Any]]:
    """The `horizon_serving` rows (horizons above 1) after ACI has learned from `matured`, oldest target
    first; a change of the served source restarts its levels from the nominal ones."""
    from stockcli.ml.intervals import INTERVAL_COLUMNS, MISCOVERAGE, aci_update
    from stockcli.ml.metrics import QUANTILE_COLUMNS

    changed: dict[tuple[str, int], dict[str, Any]] = {}
    for row in sorted(matured, key=lambda r: (r["target_date"], r["ticker"], r["horizon"])):
        key = (row["ticker"], int(row["horizon"]))
        quantiles = [row.get(name) for name in QUANTILE_COLUMNS]
        if key[1] == 1 or row.get("source") is None or any(q is None for q in quantiles):
            continue
        state = dict(changed.get(key) or serving.get(key) or _new_serving(key, incumbent_at(key[1])))
        if state.get("last_target_date") and state["last_target_date"] > row["target_date"]:
            continue
        fresh = state.get("aci_source") != row["source"]
        for level in (80, 95):
            low, high = INTERVAL_COLUMNS[level]
            miss = not quantiles[low] <= row["actual_close"] <= quantiles[high]
            alpha = MISCOVERAGE[level] if fresh else float(state[f"alpha_{level}"])
            state[f"alpha_{level}"] = aci_update(alpha, MISCOVERAGE[level], miss, gamma)
        state.update(aci_source=row["source"], last_target_date=row["target_date"])
        changed[key] = state
    return list(changed.values())


def _new_serving(key: tuple[str, int], incumbent: str) -> dict[str, Any]:
    """A ticker's first serving row at a horizon: the incumbent, nothing decided yet."""
    undecided = (
        *("p_value", "skill", "window_end", "alpha_80", "alpha_95", "aci_source", "last_target_date"),
        *("p_up_source", "p_up_p_value"),
    )
    return dict(ticker=key[0], horizon=key[1], source=incumbent, n_sessions=0, **dict.fromkeys(undecided))


def redecide_horizons(*, settings: Settings, engine: Engine, tickers: Sequence[str], through: date) -> int:
    """Choose again the interval source of `tickers` at every horizon above 1 (as `refit.redecide`), and
    whose P(up) (a candidate only where it beats the horizon's base rate, `refit.decide_p_up`), on the
    horizon's own scored rows. Returns how many decisions were written."""
    from stockcli.db import horizons as horizons_db
    from stockcli.ml.serving import tested_choice
    from stockcli.ml.stats import min_test_sessions
    from stockcli.services.refit import decide_interval, decide_p_up, selection_start

    config = settings.forecasters
    further = [h for h in config.horizons if h > 1]
    if not further or not tickers:
        return 0
    start = selection_start(settings, through)
    rows = horizons_db.scored_horizons(engine, start=start, end=through, horizons=further, tickers=tickers)
    existing = horizons_db.load_horizon_serving(engine, tickers)
    decided = []
    for key, group in _grouped(rows).items():
        incumbent = config.incumbent_at(key[1])
        minimum = max(config.horizon_min_selection_sessions, min_test_sessions(key[1]))
        scored = [selection_row(row) for row in group]
        state = existing.get(key) or _new_serving(key, incumbent)
        tested = tested_choice(state, incumbent=incumbent, alpha=settings.promotion.alpha) != incumbent
        standing = (state["source"], state["n_sessions"]) if tested else None
        decision = decide_interval(settings, scored, incumbent, standing, minimum=minimum, horizon=key[1])
        if decision is None:
            continue
        choice, dates = decision
        p_up = decide_p_up(settings, scored, horizon=key[1], minimum=minimum)
        decided.append(
            {
                **state,
                "source": choice.source,
                "p_value": choice.p_value,
                "skill": choice.skill,
                "n_sessions": len(dates),
                "window_end": max(dates),
                "p_up_source": p_up.source,
                "p_up_p_value": p_up.p_value,
            }
        )
    with engine.begin() as connection:
        horizons_db.save_horizon_serving(connection, decided)
    return len(decided)


def selection_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored horizon row as the selection and the P(up) figures read a scored prediction: every
    candidate's quantiles and P(up), and whose P(up) was served, under `detail`."""
    detail = {
        "candidates": row.get("candidates"),
        "p_up": row.get("p_ups"),
        "p_up_source": row.get("p_up_source"),
    }
    return {**row, "detail": detail}


def _grouped(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], list[Mapping[str, Any]]]:
    """Rows by (ticker, horizon), each group in base-session order."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r["ticker"], r["horizon"], r["base_date"])):
        groups.setdefault((str(row["ticker"]), int(row["horizon"])), []).append(row)
    return groups


def risk_window(settings: Settings, engine: Engine, *, through: date) -> list[dict[str, Any]]:
    """THE risk window: scored horizon rows with a target among the last `[monitor] risk_sessions`
    sessions up to `through`, only the columns the risk and coverage tests read (tail as JSON text)."""
    from stockcli.clock import calendar_for
    from stockcli.db.horizons import RISK_COLUMNS, scored_horizons

    start = calendar_for(settings).sessions_back(
        through, settings.monitor.risk_sessions - 1, otherwise=date.min
    )
    return scored_horizons(engine, start=start, end=through, columns=RISK_COLUMNS)


def risk_backtests(rows: Sequence[Mapping[str, Any]], calendar: Any, *, es_test: bool = True) -> RiskTable:
    """Every (horizon, ticker)'s risk backtest (`ml.risk.risk_backtest`) over scored horizon rows.
    Without `es_test` the simulated Expected Shortfall test is left out (`es_z2`, `es_p` None)."""
    from stockcli.ml.risk import TAIL_LEVELS, risk_backtest

    table: RiskTable = {}
    for ticker, horizon, group, sessions in _with_sessions(rows, calendar):
        realized = np.array([_log_return(row) for row in group])
        tails = tail_matrix([row.get("tail") for row in group], len(TAIL_LEVELS))
        tested = risk_backtest(realized, tails, horizon, base_sessions=sessions, es_test=es_test)
        table.setdefault(horizon, {})[ticker] = tested.to_json()
    return {horizon: table[horizon] for horizon in sorted(table)}


YARDSTICK_TAIL = 0.025  # the VaR level both the served tail and GARCH's stored quantiles give


def risk_against_garch(rows: Sequence[Mapping[str, Any]], calendar: Any) -> RiskTable:
    """{horizon: {ticker: {"served": figures, "garch": figures}}}: the served 97.5% VaR next to
    GARCH(1,1)-t's on the same non-overlapping forecasts: `n`, `exceptions`, Kupiec's and
    Christoffersen's p-values (None below `ml.risk.MIN_SESSIONS` forecasts)."""
    from stockcli.ml.risk import MIN_SESSIONS, christoffersen, kupiec_pof, non_overlapping

    table: RiskTable = {}
    for ticker, horizon, group, all_sessions in _with_sessions(rows, calendar):
        base = np.array([_number(row.get("base_close")) for row in group])
        realized = np.array([_log_return(row) for row in group])
        with np.errstate(divide="ignore", invalid="ignore"):
            var = {
                "served": np.log(np.array([_number(row.get("q025")) for row in group]) / base),
                "garch": np.log(np.array([_garch_closes(row)[0] for row in group]) / base),
            }
        complete = np.isfinite(realized) & np.isfinite(var["served"]) & np.isfinite(var["garch"])
        used = np.flatnonzero(complete)[non_overlapping(all_sessions[complete], horizon)]
        figures: dict[str, dict[str, Any]] = {}
        for name, quantile in var.items():
            hits = realized[used] < quantile[used]
            n, exceptions = int(used.size), int(hits.sum())
            tested = n >= MIN_SESSIONS
            figures[name] = {
                "n": n,
                "exceptions": exceptions,
                "kupiec_p": kupiec_pof(exceptions, n, YARDSTICK_TAIL).p_value if tested else None,
                "christoffersen_p": christoffersen(hits, YARDSTICK_TAIL).independence.p_value
                if tested
                else None,
            }
        table.setdefault(horizon, {})[ticker] = figures
    return {horizon: table[horizon] for horizon in sorted(table)}


def horizon_coverage(rows: Sequence[Mapping[str, Any]], calendar: Any) -> dict[int, dict[int, Any]]:
    """{horizon: {80: CoverageTest, 95: CoverageTest}} of the served intervals, all tickers together, on
    each ticker's non-overlapping subsample, clustered by session."""
    from stockcli.ml.intervals import misses
    from stockcli.ml.metrics import QUANTILE_COLUMNS, panel_of
    from stockcli.ml.risk import non_overlapping
    from stockcli.ml.stats import clustered_coverage_test

    kept: dict[int, list[Mapping[str, Any]]] = {}
    for _ticker, horizon, group, sessions in _with_sessions(rows, calendar):
        kept.setdefault(horizon, []).extend(group[i] for i in non_overlapping(sessions, horizon))
    out: dict[int, dict[int, Any]] = {}
    for horizon, group in sorted(kept.items()):
        quantiles = np.array([[row.get(c) for c in QUANTILE_COLUMNS] for row in group], dtype=np.float64)
        actual = np.array([row.get("actual_close") for row in group], dtype=np.float64)
        dates = [row["target_date"] for row in group]
        tickers = [str(row["ticker"]) for row in group]
        out[horizon] = {
            level: clustered_coverage_test(
                panel_of(misses(quantiles, actual, level), dates, tickers)[0], level / 100
            )
            for level in (80, 95)
        }
    return out


def _with_sessions(
    rows: Sequence[Mapping[str, Any]], calendar: Any
) -> Iterator[tuple[str, int, list[Mapping[str, Any]], np.ndarray]]:
    """(ticker, horizon, rows, their base dates' session numbers) of each `_grouped` group, the sessions
    counted from the earliest base date of `rows`."""
    days = sorted({row["base_date"] for row in rows})
    numbers = {day: calendar.sessions_since(days[0], day) for day in days}
    for (ticker, horizon), group in _grouped(rows).items():
        yield ticker, horizon, group, np.array([numbers[row["base_date"]] for row in group])


def tail_matrix(values: Sequence[Any], size: int) -> np.ndarray:
    """Stored tails (lists or JSON text) as an (n, size) matrix, NaN rows where missing or of another size.

    JSON texts are parsed in one pass by numpy's float parser (the same doubles as `json.loads`,
    several times faster); anything else one at a time."""
    import warnings

    out = np.full((len(values), size), np.nan)
    texts = [i for i, v in enumerate(values) if isinstance(v, str) and v.count(",") == size - 1]
    if texts:
        joined = ",".join(values[i].strip().removeprefix("[").removesuffix("]") for i in texts)
        with warnings.catch_warnings():  # text that is not numbers: a short result, handled below
            warnings.simplefilter("ignore", DeprecationWarning)
            flat = np.fromstring(joined.replace("null", "nan"), sep=",")  # type: ignore[call-overload]
        if flat.size == len(texts) * size:
            out[texts] = flat.reshape(len(texts), size)
            parsed_already = set(texts)
            values = [None if i in parsed_already else v for i, v in enumerate(values)]
    for i, value in enumerate(values):
        parsed = json.loads(value) if isinstance(value, str) else value
        if isinstance(parsed, list) and len(parsed) == size:
            out[i] = np.array(parsed, dtype=np.float64)
    return out


def horizon_findings(
    risk: RiskTable, coverage: Mapping[int, Mapping[int, Any]], *, coverage_alpha: float
) -> list[tuple[str, str]]:
    """The monitor's findings (trigger, words) of the horizons' backtests: a Basel red zone
    (`risk_zone_h{h}`) or an interval covering significantly less than promised (`coverage_{level}_h{h}`)."""
    findings: list[tuple[str, str]] = []
    for horizon, per_ticker in risk.items():
        red = sorted(t for t, figures in per_ticker.items() if figures.get("zone") == "red")
        if red:
            counts = ", ".join(f"{t} ({per_ticker[t]['exceptions_99']} of {per_ticker[t]['n']})" for t in red)
            words = f"the {horizon}-session 99% VaR is in the Basel red zone for {counts} exceptions"
            findings.append((f"risk_zone_h{horizon}", words))
    for horizon, tests in coverage.items():
        for level, test in tests.items():
            covered = 1.0 - test.misses / test.n if test.n else None
            if covered is not None and test.p_value < coverage_alpha and covered < level / 100:
                words = (
                    f"the {horizon}-session {level}% interval covered {covered:.1%} of {test.n} "
                    f"non-overlapping closes (binomial p = {test.p_value:.3g} < {coverage_alpha:g})"
                )
                findings.append((f"coverage_{level}_h{horizon}", words))
    return findings


def _log_return(row: Mapping[str, Any]) -> float:
    actual, base = _number(row.get("actual_close")), _number(row.get("base_close"))
    if not (actual > 0 and base > 0):
        return float("nan")
    return float(np.log(actual / base))


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value))


def horizon_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{horizon: the served intervals' `interval_block` on log returns, GARCH's beside them ("garch"),
    the share of each served source, and the served P(up)'s Brier score next to the base rate's
    (`p_up_figures`)}, over scored horizon rows."""
    from stockcli.ml.intervals import interval_block
    from stockcli.ml.metrics import QUANTILE_COLUMNS, log_quantiles, p_up_figures

    by_horizon: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_horizon.setdefault(int(row["horizon"]), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for horizon, group in sorted(by_horizon.items()):
        base = np.array([_number(r.get("base_close")) for r in group])
        realized = np.array([_log_return(r) for r in group])
        served = np.array([[_number(r.get(c)) for c in QUANTILE_COLUMNS] for r in group])
        garch = np.array([_garch_closes(r) for r in group])
        sources = [str(r.get("source")) for r in group]
        out[str(horizon)] = {
            **interval_block(log_quantiles(served, base), realized),
            "garch": interval_block(log_quantiles(garch, base), realized),
            "source_share": {s: sources.count(s) / len(sources) for s in sorted(set(sources))},
            "p_up": p_up_figures([selection_row(r) for r in group]),
        }
    return out


def _garch_closes(row: Mapping[str, Any]) -> list[float]:
    values = (row.get("candidates") or {}).get("garch")
    if not isinstance(values, list) or len(values) != 5:
        return [float("nan")] * 5
    return [_number(v) for v in values]
