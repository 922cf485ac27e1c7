"""Coverage and cost of the statistical candidates' multi-session bands on the sample bars.

Every candidate of the default table is fitted on each sample ticker's bars up to 2011-03-01 and,
with those parameters fixed, forecasts the log return over h = 1, 5 and 20 of the ticker's own
sessions from base dates in the validation year 2011-03-01 .. 2012-03-01 (targets inside it too;
the test year 2012-03 .. 2013-03 is never read). Coverage of the 80% and 95% bands is given on
non-overlapping base dates (every h-th session: independent, few at h = 20) and on every base date
(overlapping, more but correlated); the cost is `quantiles_at` for one ticker's last row (a daily
forecast) and for its whole validation year, at each horizon against horizon 1.

    .venv/bin/python tests/benchmarks/bench_horizons.py
    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_horizons.py
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

FIT_END = date(2011, 3, 1)
VALIDATION_END = date(2012, 3, 1)
HORIZONS = (1, 5, 20)


def bench_horizons(repeats: int = 20) -> dict[str, Any]:
    """{"coverage": {(candidate, h, overlapping): (n, cov80, cov95)}, "cost": {(candidate, rows, h): s}}."""
    from stockcli.config import load_settings
    from stockcli.ml.forecasters import TickerBars, build_table, fit_all
    from stockcli.ml.intervals import QUANTILES, interval_block
    from tests.bars_data import SAMPLE_TICKERS, sample_frame

    table = build_table(load_settings(None, environ={}))
    hits: dict[tuple[str, int, bool], list[np.ndarray]] = {}
    cost: dict[tuple[str, str, int], float] = {}
    for ticker in SAMPLE_TICKERS:
        frame = sample_frame(ticker, end=VALIDATION_END)
        bars = TickerBars.from_frame(frame)
        days = frame.index.date
        fit_rows = int(np.searchsorted(days, FIT_END, side="right"))
        fits = fit_all(table, bars.head(fit_rows))
        first = int(np.searchsorted(days, FIT_END))
        log_close = np.log(bars.close)
        for horizon in HORIZONS:
            every = np.arange(first, len(bars) - horizon)
            actual_all = log_close[every + horizon] - log_close[every]
            for name, forecaster in table.items():
                params = fits[name]
                if params is None:
                    continue
                values = forecaster.quantiles_at(params, bars, every, QUANTILES, horizon)
                for overlapping, chosen in ((False, slice(None, None, horizon)), (True, slice(None))):
                    band = values[chosen]
                    actual = actual_all[chosen]
                    hits.setdefault((name, horizon, overlapping), []).append(np.column_stack([band, actual]))
                for label, rows in (("last row", every[-1:]), ("year", every)):
                    started = time.perf_counter()
                    for _ in range(repeats):
                        forecaster.quantiles_at(params, bars, rows, QUANTILES, horizon)
                    key = (name, label, horizon)
                    cost[key] = cost.get(key, 0.0) + (time.perf_counter() - started) / repeats
    figures: dict[str, Any] = {"coverage": {}, "cost": cost}
    print(f"coverage, fit to {FIT_END}, base dates {FIT_END}..{VALIDATION_END}, {', '.join(SAMPLE_TICKERS)}")
    print(f"{'candidate':<10} {'h':>3}  {'non-overlapping n  80%    95%':<32} {'overlapping n  80%    95%'}")
    for name in table:
        for horizon in HORIZONS:
            cells = []
            for overlapping in (False, True):
                stacked = np.vstack(hits[(name, horizon, overlapping)])
                block = interval_block(stacked[:, :5], stacked[:, 5])
                cov80, cov95 = block["coverage_80"], block["coverage_95"]
                figures["coverage"][(name, horizon, overlapping)] = (len(stacked), cov80, cov95)
                cells.append(f"{len(stacked):>5} {100 * (cov80 or 0):6.1f} {100 * (cov95 or 0):6.1f}")
            print(f"{name:<10} {horizon:>3}  {cells[0]:<32} {cells[1]}")
    print("quantiles_at, the four tickers summed (ms), and the ratio to horizon 1")
    for name in table:
        for label in ("last row", "year"):
            base = cost[(name, label, 1)]
            parts = [
                f"h={h}: {1e3 * cost[(name, label, h)]:.2f} ({cost[(name, label, h)] / base:.2f}x)"
                for h in HORIZONS
            ]
            print(f"{name:<10} {label:<9} " + "  ".join(parts))
    return figures


@pytest.mark.benchmark
def test_horizon_coverage_and_cost() -> None:
    figures = bench_horizons(repeats=5)
    assert all(n > 0 for n, _, _ in figures["coverage"].values())


if __name__ == "__main__":
    bench_horizons()
