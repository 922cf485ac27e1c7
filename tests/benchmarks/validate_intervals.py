"""Score the interval candidates on the sample's validation years, never on the reported year.

The defaults under `[forecasters]` are chosen here (the figures in `config.toml`'s comments come from
this script) and reported once with `stockcli backtest --start 2012-03-01 --end 2013-03-01`. Bars dated
on or after `REPORTED_FROM` are dropped when they are read, so nothing here can see the reported year.

For each validation year Y (Y-03-01 .. Y+1-03-01) and each bundled sample ticker (with the market's
bars of `[forecasters] har_market`, from the same files, as `ml.forecasters.ticker_bars` gives them
to the services): every 21 sessions, fit every candidate of the configuration (`build_table`,
`fit_all`, each fit warm-started from the previous one, as the scheduled refit does) on the bars up to
that session; then forecast each session of the next 21 with the parameters fixed. Skill = 1 - mean
loss / GARCH(1,1)-t's, pooled over tickers. `--horizon 5` scores the 5-session return instead.

    .venv/bin/python -m tests.benchmarks.validate_intervals [--config config.toml] [--start 2004-08-19]
        [--horizon 1]

Settings may be varied without editing the file, e.g. STOCKCLI_FORECASTERS__HAR_HALF_LIFE=0. About
half a minute on one core.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stockcli.config import load_settings
from stockcli.ml.forecasters import TickerBars, build_table, fit_all, ticker_bars
from stockcli.ml.intervals import INTERVAL_COLUMNS, MISCOVERAGE, QUANTILES, pinball_losses, winkler_scores
from stockcli.sources.csv import read_bars_csv
from stockcli.sources.sample import SAMPLE_DIR, SAMPLE_TICKERS, SampleSource

REPORTED_FROM = pd.Timestamp("2012-03-01")
"""The sample's reported year starts here: never read, so never tuned on."""
VALIDATION_YEARS = (2008, 2009, 2010, 2011)
REFIT_SESSIONS = 21
REFERENCE = "garch"
SAMPLE = SAMPLE_DIR


def load(path: Path, start: str) -> pd.DataFrame:
    """One ticker's bars from `start` up to, and excluding, the reported year."""
    frame = read_bars_csv(path)
    return frame[(frame.index >= pd.Timestamp(start)) & (frame.index < REPORTED_FROM)]


def year_rows(index: pd.DatetimeIndex, year: int, horizon: int = 1) -> np.ndarray:
    """Rows forecast from in the year (each with its `horizon`-th session before the reported year)."""
    inside = (index >= pd.Timestamp(f"{year}-03-01")) & (index < pd.Timestamp(f"{year + 1}-03-01"))
    rows = np.flatnonzero(inside)
    return rows[rows + horizon < len(index)]


def ticker_losses(
    table: Mapping[str, object], index: pd.DatetimeIndex, bars: TickerBars, horizon: int = 1
) -> dict[int, dict[str, dict]]:
    """{year: {candidate: {"winkler", "pinball", "cov80", "cov95": per-session arrays}}} of the
    `horizon`-session log return (overlapping ones beyond 1)."""
    realised = np.log(bars.close[horizon:] / bars.close[:-horizon])
    out: dict[int, dict[str, dict]] = {}
    for year in VALIDATION_YEARS:
        rows = year_rows(index, year, horizon)
        quantiles = {name: np.full((rows.size, len(QUANTILES)), np.nan) for name in table}
        previous: Mapping[str, object] | None = None
        for first in range(0, rows.size, REFIT_SESSIONS):
            block = rows[first : first + REFIT_SESSIONS]
            fits = fit_all(table, bars.head(int(block[0]) + 1), previous)  # type: ignore[arg-type]
            previous = fits
            for name, forecaster in table.items():
                if fits[name] is not None:
                    quantiles[name][first : first + block.size] = forecaster.quantiles_at(  # type: ignore[attr-defined]
                        fits[name], bars, block, QUANTILES, horizon
                    )
        y = realised[rows]
        out[year] = {}
        for name, q in quantiles.items():
            low95, high95 = INTERVAL_COLUMNS[95]
            low80, high80 = INTERVAL_COLUMNS[80]
            out[year][name] = {
                "winkler": winkler_scores(q[:, low95], q[:, high95], y, MISCOVERAGE[95]),
                "pinball": pinball_losses(q, y),
                "cov80": (q[:, low80] <= y) & (y <= q[:, high80]),
                "cov95": (q[:, low95] <= y) & (y <= q[:, high95]),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config.toml"))
    parser.add_argument("--start", default="2004-08-19", help="first bar used ([data] start of config.toml)")
    parser.add_argument(
        "--horizon", type=int, default=1, help="sessions ahead (1, or one of [forecasters] horizons)"
    )
    args = parser.parse_args()
    settings = load_settings(args.config)
    table = build_table(settings)
    if REFERENCE not in table:
        raise SystemExit(f"{REFERENCE!r} must be among [forecasters] candidates: it is the yardstick.")
    source = SampleSource()
    frames = {ticker: load(source.path_for(ticker), args.start) for ticker in SAMPLE_TICKERS}  # type: ignore[arg-type]
    market = settings.forecasters.har_market
    per_ticker = {
        ticker: ticker_losses(table, frame.index, ticker_bars(frames, ticker, market), args.horizon)
        for ticker, frame in frames.items()
    }
    print(
        f"{'candidate':12s} "
        + " ".join(f"{y:>7d}" for y in VALIDATION_YEARS)
        + "    mean  (95% Winkler skill vs garch, %)   per ticker, all years"
    )
    for name in table:
        years = [pooled_figures(per_ticker, name, list(per_ticker), [year]) for year in VALIDATION_YEARS]
        tickers = [pooled_figures(per_ticker, name, [t], VALIDATION_YEARS) for t in per_ticker]
        print(
            f"{name:12s} "
            + " ".join(f"{year[0]:+7.2f}" for year in years)
            + f" {np.mean([year[0] for year in years]):+7.2f}"
            + f"  coverage 80/95 {np.mean([y[1] for y in years]):.3f}/{np.mean([y[2] for y in years]):.3f} "
            + " ".join(
                f"{t.lstrip('^')} {figures[0]:+.1f}" for t, figures in zip(per_ticker, tickers, strict=True)
            )
        )


def pooled_figures(
    per_ticker: Mapping[str, dict[int, dict[str, dict]]], name: str, tickers: list[str], years: Sequence[int]
) -> tuple[float, float, float]:
    """(95% Winkler skill vs the reference in %, coverage 80%, coverage 95%) of `name`, its sessions
    of `tickers` and `years` pooled."""
    pooled = {
        key: np.concatenate([per_ticker[t][y][name][key] for t in tickers for y in years])
        for key in ("winkler", "cov80", "cov95")
    }
    reference = np.concatenate([per_ticker[t][y][REFERENCE]["winkler"] for t in tickers for y in years])
    ok = np.isfinite(pooled["winkler"]) & np.isfinite(reference)
    skill = 100 * (1 - pooled["winkler"][ok].mean() / reference[ok].mean())
    return float(skill), float(pooled["cov80"][ok].mean()), float(pooled["cov95"][ok].mean())


if __name__ == "__main__":
    main()
