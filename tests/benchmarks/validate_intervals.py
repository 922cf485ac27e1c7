"""Score the interval candidates on the sample's validation years, never on the reported year.

The defaults under `[forecasters]` are chosen here (the figures in `config.toml`'s comments come from
this script) and reported once with `stockcli backtest --start 2012-03-01 --end 2013-03-01`. Bars dated
on or after `REPORTED_FROM` are dropped when they are read, so nothing here can see the reported year.

For each validation year Y (Y-03-01 .. Y+1-03-01) and each bundled sample ticker: every 21 sessions,
fit every candidate of the configuration (`build_table`, `fit_all`, each fit warm-started from the
previous one, as the scheduled refit does) on the bars up to that session; then forecast each session
of the next 21 with the parameters fixed. Skill = 1 - mean loss / GARCH(1,1)-t's, pooled over tickers.

    .venv/bin/python -m tests.benchmarks.validate_intervals [--config config.toml] [--start 2004-08-19]

About half a minute on one core.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from stockcli.config import load_settings
from stockcli.ml.forecasters import TickerBars, build_table, fit_all
from stockcli.ml.intervals import INTERVAL_COLUMNS, MISCOVERAGE, QUANTILES, pinball_losses, winkler_scores
from stockcli.sources.csv import read_bars_csv

REPORTED_FROM = pd.Timestamp("2012-03-01")
"""The sample's reported year starts here: never read, so never tuned on."""
VALIDATION_YEARS = (2008, 2009, 2010, 2011)
REFIT_SESSIONS = 21
REFERENCE = "garch"
SAMPLE = Path(__file__).resolve().parents[2] / "stockcli" / "sources" / "data"


def load(path: Path, start: str) -> tuple[pd.DatetimeIndex, TickerBars]:
    """One ticker's bars from `start` up to, and excluding, the reported year."""
    frame = read_bars_csv(path)
    frame = frame[(frame.index >= pd.Timestamp(start)) & (frame.index < REPORTED_FROM)]
    return frame.index, TickerBars.from_frame(frame)


def year_rows(index: pd.DatetimeIndex, year: int) -> np.ndarray:
    """Rows forecast from in the year (each with its next session before the reported year)."""
    inside = (index >= pd.Timestamp(f"{year}-03-01")) & (index < pd.Timestamp(f"{year + 1}-03-01"))
    rows = np.flatnonzero(inside)
    return rows[rows + 1 < len(index)]


def ticker_losses(table: Mapping[str, object], path: Path, start: str) -> dict[int, dict[str, dict]]:
    """{year: {candidate: {"winkler", "pinball", "cov80", "cov95": per-session arrays}}}."""
    index, bars = load(path, start)
    realised = np.log(bars.close[1:] / bars.close[:-1])
    out: dict[int, dict[str, dict]] = {}
    for year in VALIDATION_YEARS:
        rows = year_rows(index, year)
        quantiles = {name: np.full((rows.size, len(QUANTILES)), np.nan) for name in table}
        previous: Mapping[str, object] | None = None
        for first in range(0, rows.size, REFIT_SESSIONS):
            block = rows[first : first + REFIT_SESSIONS]
            fits = fit_all(table, bars.head(int(block[0]) + 1), previous)  # type: ignore[arg-type]
            previous = fits
            for name, forecaster in table.items():
                if fits[name] is not None:
                    quantiles[name][first : first + block.size] = forecaster.quantiles_at(  # type: ignore[attr-defined]
                        fits[name], bars, block, QUANTILES
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
    args = parser.parse_args()
    table = build_table(load_settings(args.config))
    if REFERENCE not in table:
        raise SystemExit(f"{REFERENCE!r} must be among [forecasters] candidates: it is the yardstick.")
    per_ticker = {path.stem: ticker_losses(table, path, args.start) for path in sorted(SAMPLE.glob("*.csv"))}
    print(
        f"{'candidate':12s} "
        + " ".join(f"{y:>7d}" for y in VALIDATION_YEARS)
        + "    mean  (95% Winkler skill vs garch, %)"
    )
    for name in table:
        skills, cov80, cov95 = [], [], []
        for year in VALIDATION_YEARS:
            pooled = {
                key: np.concatenate([per_ticker[t][year][name][key] for t in per_ticker])
                for key in ("winkler", "cov80", "cov95")
            }
            reference = np.concatenate([per_ticker[t][year][REFERENCE]["winkler"] for t in per_ticker])
            ok = np.isfinite(pooled["winkler"]) & np.isfinite(reference)
            skills.append(100 * (1 - pooled["winkler"][ok].mean() / reference[ok].mean()))
            cov80.append(pooled["cov80"][ok].mean())
            cov95.append(pooled["cov95"][ok].mean())
        print(
            f"{name:12s} " + " ".join(f"{s:+7.2f}" for s in skills) + f" {np.mean(skills):+7.2f}"
            f"  coverage 80/95 {np.mean(cov80):.3f}/{np.mean(cov95):.3f}"
        )


if __name__ == "__main__":
    main()
