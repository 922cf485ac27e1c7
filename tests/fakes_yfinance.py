"""A fake Yahoo Finance at yfinance's network boundary.

`yf.download` builds one `Ticker` per symbol and calls its `history()`, which is what talks to Yahoo.
`FakeYahoo.install` replaces `yfinance.base.TickerBase.history` with an answer shaped like yfinance
1.x's `PriceHistory.history`: a flat frame (Open, High, Low, Close, Volume, plus Adj Close when
`auto_adjust=False`) indexed by a tz-aware `Date` at midnight exchange time; or it raises what that
method raises (`YFRateLimitError`, `YFPricesMissingError` for an unknown ticker or an empty range,
curl_cffi's `Timeout`). The real `yf.download` then does the rest as in production: the MultiIndex
(Price, Ticker) columns, the time-zone handling, and errors swallowed and logged instead of raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockcli.sources.sample import SAMPLE_DIR

EXCHANGE_TZ = "America/New_York"


def history_frame(
    ticker: str, start: str, end: str, *, tz: str = EXCHANGE_TZ, scale: float = 1.0
) -> pd.DataFrame:
    """Real sample bars of `ticker` from start to end (both included) as `history()` returns them."""
    name = ticker.lstrip("^")
    raw = pd.read_csv(SAMPLE_DIR / f"{name}.csv", parse_dates=["Date"]).set_index("Date")
    raw = raw.loc[start:end]  # type: ignore[misc]
    index = pd.DatetimeIndex(raw.index).tz_localize(tz)
    index.name = "Date"
    frame = pd.DataFrame(
        {
            "Open": raw["Open"].to_numpy(dtype="float64") * scale,
            "High": raw["High"].to_numpy(dtype="float64") * scale,
            "Low": raw["Low"].to_numpy(dtype="float64") * scale,
            "Close": raw["Close"].to_numpy(dtype="float64") * scale,
            "Volume": raw["Volume"].to_numpy(dtype="int64"),
        },
        index=index,
    )
    return frame


@dataclass
class FakeYahoo:
    """Per-ticker histories and scripted failures; records every call."""

    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    # Exceptions raised by the next calls for a ticker, in order; then the history is served.
    failures: dict[str, list[BaseException]] = field(default_factory=dict)
    # A factory of the exception raised on every call for a ticker.
    always: dict[str, Callable[[], BaseException]] = field(default_factory=dict)
    # Multiplies the Adj Close column served with auto_adjust=False (dividend adjustment).
    adj_factor: float = 1.0
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def calls_for(self, ticker: str) -> int:
        return sum(1 for name, _ in self.calls if name == ticker)

    def history(self, ticker: str, **kwargs: Any) -> pd.DataFrame:
        from yfinance.exceptions import YFPricesMissingError

        self.calls.append((ticker, kwargs))
        if ticker in self.always:
            raise self.always[ticker]()
        queue = self.failures.get(ticker)
        if queue:
            raise queue.pop(0)
        start, end = kwargs.get("start"), kwargs.get("end")
        if ticker not in self.histories:
            raise YFPricesMissingError(ticker, f" (1d {start} -> {end})")
        frame = self.histories[ticker]
        local = frame.index.tz_localize(None)
        mask = np.ones(len(frame), dtype=bool)
        if start:
            mask &= local >= pd.Timestamp(start)
        if end:
            mask &= local < pd.Timestamp(end)  # yfinance's end is exclusive
        part = frame[mask].copy()
        if part.empty:
            raise YFPricesMissingError(ticker, f" (1d {start} -> {end})")
        if not kwargs.get("auto_adjust", True):
            part.insert(4, "Adj Close", part["Close"] * self.adj_factor)
        return part

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeYahoo:
        import yfinance.base

        fake = self

        def history(ticker_object: Any, *args: Any, **kwargs: Any) -> pd.DataFrame:
            assert not args, "yf.download passes history() keyword arguments only"
            return fake.history(ticker_object.ticker, **kwargs)

        monkeypatch.setattr(yfinance.base.TickerBase, "history", history)
        return self


def rate_limit() -> BaseException:
    from yfinance.exceptions import YFRateLimitError

    return YFRateLimitError()


def timeout() -> BaseException:
    from curl_cffi.requests.exceptions import Timeout

    return Timeout("Failed to perform, curl: (28) Operation timed out after 30001 milliseconds")
