"""A synthetic market for the scale benchmarks (issue 10, item 8): seeded, no network.

`make_market(n_tickers)` gives `n_tickers` watchlist series over ten years of XNYS sessions
(2010-01-04 .. 2019-12-31, 2,516 sessions):

- `^MKT`, an index listed from the first session (the watchlist's context series by default, as
  ^GSPC is for the sample), and `n_tickers - 1` stocks `S0001`, `S0002`, ...;
- a stock's listing date is uniform over the ten years (so about 10% list in the last year, and a
  few are too young for a single window);
- about 5% of the stocks have two to four gaps of 2..10 sessions without bars (longer than the
  default `[features] ffill_limit` of 1, so each gap cuts their windows);
- about 5% are delisted: their bars stop at a uniform session between 60 sessions after listing
  and a month before the end;
- prices: a market factor with GARCH(1,1) volatility clustering, each stock's beta times it plus its
  own GARCH noise with Student-t(5) shocks (annualised volatility 15..70%), a start price log-uniform
  on 5..500; open, high and low around it; volumes log-normal around a per-stock level (median
  ~600k shares, 30k..20M) that rises with the size of the move, an index at ~3 billion.

The same `n_tickers` and seed give the same bars; the first `k` stocks of a bigger market are the
stocks of a smaller one, so benchmarks at 100, 250 and 500 tickers see nested watchlists.
`write_csv_folder` writes them as the `csv` source reads them; `write_config` writes a workspace
config using that folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

START = date(2010, 1, 4)
END = date(2019, 12, 31)
INDEX = "^MKT"
SEED = 20191231
GAP_FRACTION = 0.05
DELISTED_FRACTION = 0.05


@dataclass(frozen=True)
class Series:
    """One ticker's bars: session positions (into `Market.sessions`) and OHLCV columns."""

    positions: np.ndarray  # int64 positions into Market.sessions, ascending
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # int64


@dataclass(frozen=True)
class Market:
    sessions: list[date]
    tickers: tuple[str, ...]  # the watchlist: INDEX first, then the stocks
    series: dict[str, Series]
    listed: dict[str, date] = field(default_factory=dict)
    delisted: dict[str, date] = field(default_factory=dict)  # ticker -> its last bar
    gapped: dict[str, int] = field(default_factory=dict)  # ticker -> sessions missing inside its life

    @property
    def n_bars(self) -> int:
        return sum(len(s.positions) for s in self.series.values())

    def describe(self) -> str:
        lives = np.array([len(s.positions) for t, s in self.series.items() if t != INDEX])
        young = int((lives < 250).sum())
        return (
            f"{len(self.tickers)} tickers ({INDEX} + {len(self.tickers) - 1} stocks), {len(self.sessions)} "
            f"sessions {self.sessions[0]}..{self.sessions[-1]}, {self.n_bars:,} bars; listing dates uniform "
            f"(median {int(np.median(lives))} bars a stock, {young} with under a year), "
            f"{len(self.gapped)} with gaps ({sum(self.gapped.values())} sessions missing), "
            f"{len(self.delisted)} delisted"
        )

    def predictable(self, count: int) -> list[str]:
        """`count` tickers with bars on the last session and long histories: INDEX and the oldest stocks."""
        alive = [
            t
            for t in self.tickers[1:]
            if t not in self.delisted
            and t not in self.gapped
            and self.series[t].positions[-1] == len(self.sessions) - 1
        ]
        alive.sort(key=lambda t: (int(self.series[t].positions[0]), t))
        return [INDEX, *alive[: count - 1]]


def xnys_sessions(start: date = START, end: date = END) -> list[date]:
    from stockcli.clock import trading_calendar

    return trading_calendar("XNYS").sessions(start, end)


def stock_names(n_stocks: int) -> list[str]:
    return [f"S{i:04d}" for i in range(1, n_stocks + 1)]


def make_market(n_tickers: int = 500, *, seed: int = SEED, sessions: Sequence[date] | None = None) -> Market:
    """The synthetic market described in the module docstring (`n_tickers` including the index)."""
    days = list(sessions) if sessions is not None else xnys_sessions()
    n = len(days)
    rng = np.random.default_rng(seed)

    # The market factor: GARCH(1,1) with Student-t shocks, ~16% a year on average.
    market_shocks = rng.standard_t(5, (1, n)) / np.sqrt(5 / 3)
    market = _garch_paths(market_shocks, daily_vol=np.array([0.010]), persistence=0.97, alpha=0.08)[0]
    series: dict[str, Series] = {INDEX: _ohlcv(rng, market, 1200.0, 3e9, np.arange(n), 0.010)}
    tickers = [INDEX]
    listed = {INDEX: days[0]}
    delisted: dict[str, date] = {}
    gapped: dict[str, int] = {}
    # Every stock draws from its own generator (seeded by its number), so the first k stocks are
    # the same whatever the size of the market. Their GARCH recursions run side by side.
    names = stock_names(max(n_tickers - 1, 0))
    generators = [np.random.default_rng([seed, number]) for number in range(1, len(names) + 1)]
    vols = np.array([g.uniform(0.15, 0.70) / np.sqrt(252) for g in generators])
    betas = np.array([g.uniform(0.4, 1.6) for g in generators])
    shocks = np.array([g.standard_t(5, n) / np.sqrt(5 / 3) for g in generators]).reshape(len(names), n)
    own_returns = _garch_paths(shocks, daily_vol=vols, persistence=0.95, alpha=0.07)
    for k, (name, own) in enumerate(zip(names, generators, strict=True)):
        returns = betas[k] * market + own_returns[k]
        first = int(own.integers(0, n))
        last = n - 1
        if own.random() < DELISTED_FRACTION and first < n - 80:
            last = int(own.integers(min(first + 60, n - 22), n - 21))
            delisted[name] = days[last]
        positions = np.arange(first, last + 1)
        if own.random() < GAP_FRACTION and len(positions) > 200:
            keep = np.ones(len(positions), dtype=bool)
            for _ in range(int(own.integers(2, 5))):
                length = int(own.integers(2, 11))
                at = int(own.integers(20, len(positions) - length - 20))
                keep[at : at + length] = False
            gapped[name] = int((~keep).sum())
            positions = positions[keep]
        price = float(np.exp(own.uniform(np.log(5.0), np.log(500.0))))
        level = float(np.exp(own.normal(np.log(6e5), 1.0)))
        level = min(max(level, 3e4), 2e7)
        series[name] = _ohlcv(own, returns, price, level, positions, float(vols[k]))
        tickers.append(name)
        listed[name] = days[first]
    return Market(
        sessions=days, tickers=tuple(tickers), series=series, listed=listed, delisted=delisted, gapped=gapped
    )


def _garch_paths(
    shocks: np.ndarray, *, daily_vol: np.ndarray, persistence: float, alpha: float
) -> np.ndarray:
    """GARCH(1,1) log returns for each row of unit-variance `shocks`, one recursion over time for all."""
    beta = persistence - alpha
    omega = daily_vol**2 * (1 - persistence)
    variance = daily_vol**2
    out = np.empty_like(shocks)
    for t in range(shocks.shape[1]):
        out[:, t] = np.sqrt(variance) * shocks[:, t]
        variance = omega + alpha * out[:, t] ** 2 + beta * variance
    return out


def _ohlcv(
    rng: np.random.Generator,
    returns: np.ndarray,
    price: float,
    volume_level: float,
    positions: np.ndarray,
    vol: float,
) -> Series:
    """Bars on `positions` of a path with log returns `returns` (a gap simply has no bars)."""
    n = len(returns)
    first = int(positions[0]) if len(positions) else 0
    path = np.zeros(n)
    path[first:] = np.cumsum(returns[first:]) - returns[first]
    close = price * np.exp(path)
    previous = np.concatenate([[close[0]], close[:-1]])
    open_ = previous * np.exp(rng.normal(0.0, 0.3 * vol, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.5 * vol, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.5 * vol, n)))
    move = np.abs(returns) / max(vol, 1e-6)
    volume = volume_level * np.exp(rng.normal(0.0, 0.35, n)) * (1.0 + 0.4 * move)
    p = positions
    return Series(
        positions=p.astype(np.int64),
        open=np.round(open_[p], 4),
        high=np.round(high[p], 4),
        low=np.round(low[p], 4),
        close=np.round(close[p], 4),
        volume=np.maximum(volume[p], 100).astype(np.int64),
    )


def write_csv_folder(market: Market, folder: Path, tickers: Sequence[str] | None = None) -> int:
    """One `<TICKER>.csv` per ticker (Date,Open,High,Low,Close,Volume); returns the rows written."""
    folder.mkdir(parents=True, exist_ok=True)
    iso = [d.isoformat() for d in market.sessions]
    rows = 0
    for ticker in tickers or market.tickers:
        s = market.series[ticker]
        lines = ["Date,Open,High,Low,Close,Volume"]
        lines += [
            f"{iso[p]},{o:.4f},{h:.4f},{lo:.4f},{c:.4f},{v}"
            for p, o, h, lo, c, v in zip(
                s.positions.tolist(),
                s.open.tolist(),
                s.high.tolist(),
                s.low.tolist(),
                s.close.tolist(),
                s.volume.tolist(),
                strict=True,
            )
        ]
        (folder / f"{ticker}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        rows += len(s.positions)
    return rows


def write_config(
    path: Path,
    tickers: Sequence[str],
    *,
    csv_dir: Path,
    data_dir: Path,
    extra: str = "",
) -> Path:
    """A workspace config: the csv source on `csv_dir`, `tickers` from START, state in `data_dir`."""
    listing = ", ".join(f'"{t}"' for t in tickers)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[data]\n"
        'source = "csv"\n'
        f'csv_dir = "{csv_dir}"\n'
        f"tickers = [{listing}]\n"
        f"start = {START.isoformat()}\n"
        "[storage]\n"
        f'data_dir = "{data_dir}"\n' + extra,
        encoding="utf-8",
    )
    return path


def store_bars(
    engine: Any,
    market: Market,
    *,
    tickers: Sequence[str] | None = None,
    end: date | None = None,
    source: str = "csv",
) -> int:
    """Write the bars (up to `end`) with the store's own upsert, tagged as fetched from `source`
    (so a later `fetch` from the csv folder only adds the newer bars); returns the bars written."""
    from datetime import UTC, datetime

    from stockcli.db.bars import upsert_bars

    fetched_at = datetime(2020, 1, 1, tzinfo=UTC)
    written = 0
    for ticker in tickers or market.tickers:
        s = market.series[ticker]
        keep = s.positions <= (len(market.sessions) - 1 if end is None else _position(market, end))
        rows = [
            {
                "ticker": ticker,
                "date": market.sessions[p],
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume": v,
                "source": source,
                "fetched_at": fetched_at,
            }
            for p, o, h, lo, c, v in zip(
                s.positions[keep].tolist(),
                s.open[keep].tolist(),
                s.high[keep].tolist(),
                s.low[keep].tolist(),
                s.close[keep].tolist(),
                s.volume[keep].tolist(),
                strict=True,
            )
        ]
        with engine.begin() as connection:
            written += upsert_bars(connection, rows)
    return written


def _position(market: Market, day: date) -> int:
    import bisect

    return bisect.bisect_right(market.sessions, day) - 1


@dataclass(frozen=True)
class Measured:
    """A finished child process: exit code, wall time, peak resident memory, output."""

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    stdout: str
    stderr: str

    @property
    def peak_rss_gib(self) -> float:
        return self.peak_rss_bytes / 2**30


# Runs the measured command and reports its wall time and its rusage. A process's peak RSS counts
# the memory image it had before `exec` (Linux keeps the high-water mark across exec, and a child
# made by fork or vfork starts from its parent's), so a command spawned straight from a benchmark
# that has built a market or trained a model would report the benchmark's own memory. Spawned from
# this small launcher instead, it inherits the launcher's ~10 MiB.
LAUNCHER = """\
import json, os, subprocess, sys, time
begin = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_pid, status, usage = os.wait4(child.pid, 0)
wall_s = time.perf_counter() - begin
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as handle:
    json.dump({"wall_s": wall_s, "maxrss_kib": usage.ru_maxrss, "returncode": code}, handle)
sys.exit(0)
"""


def run_measured(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Measured:
    """Run `command` in a fresh process; its wall time and its own peak RSS (the `wait4` ru_maxrss of
    that process alone, spawned from a small launcher: see LAUNCHER)."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="stockcli-measured-") as folder:
        report = Path(folder) / "rusage.json"
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(report), *command],
            capture_output=True,
            text=True,
            env=dict(env) if env else None,
            cwd=cwd,
            check=False,
        )
        if not report.is_file():
            raise RuntimeError(f"the launcher failed ({done.returncode}):\n{done.stderr[-2000:]}")
        figures = json.loads(report.read_text())
    return Measured(
        returncode=int(figures["returncode"]),
        wall_s=float(figures["wall_s"]),
        peak_rss_bytes=int(figures["maxrss_kib"]) * 1024,  # KiB on Linux
        stdout=done.stdout,
        stderr=done.stderr,
    )


def machine_load() -> str:
    """The 1/5/15-minute load averages and the core count, to print beside the figures."""
    import os

    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"
