"""The `yahoo` source: daily bars through yfinance 1.x (`yf.download`, one ticker per call).

yfinance's quirks stop here: MultiIndex columns, an optional `Adj Close`, a tz-aware index (the
session date is the exchange's wall-clock date), and errors logged instead of raised (read from its
logger: a rate limit or timeout is transient, "possibly delisted" no data, anything else a failure).
Its time-zone cache lives in `<data_dir>/yfinance`.
"""

from __future__ import annotations

import logging
import re
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockcli.errors import SourceError, TransientSourceError
from stockcli.sources.base import BAR_COLUMNS, SourceBars, adjusted_to_close, empty_bars, finish

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

_ERROR_LINE = re.compile(r"^\[(?P<symbols>[^\]]*)\]:\s*(?P<body>.*)$", re.DOTALL)
_EXCEPTION_REPR = re.compile(r"^(?P<kind>[A-Za-z_][\w.]*)\((?P<text>.*)\)$", re.DOTALL)
_TRANSIENT_KINDS = ("RateLimit", "Timeout", "TimedOut")
_TRANSIENT_WORDS = ("too many requests", "rate limit", "timed out", "timeout")
_NO_DATA_KINDS = ("YFPricesMissingError", "YFTzMissingError", "YFTickerMissingError")
_NO_DATA_WORDS = ("delisted", "no price data", "no timezone", "no data found")
_UTC_NAMES = ("UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z")
_HINT_TRANSIENT = "Yahoo Finance throttles or timed out; try again later."
_HINT_FAILED = "Check the ticker and the network, or run again with --verbose for yfinance's own messages."


def classify(kind: str, text: str) -> str:
    """`transient`, `no_data` or `failed` for an error yfinance reported (exception class and message)."""
    lowered = text.lower()
    if any(word in kind for word in _TRANSIENT_KINDS) or any(word in lowered for word in _TRANSIENT_WORDS):
        return "transient"
    if kind in _NO_DATA_KINDS or any(word in lowered for word in _NO_DATA_WORDS):
        return "no_data"
    return "failed"


class _ErrorCapture(logging.Handler):
    """Collects the per-ticker error lines that `yf.download` logs instead of raising."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: list[tuple[list[str], str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().strip()
        except Exception:  # a malformed record must never break a fetch
            return
        match = _ERROR_LINE.match(message)
        if match is None:
            return
        symbols = [s.strip().strip("'\"") for s in match["symbols"].split(",") if s.strip()]
        body = match["body"].strip()
        exception = _EXCEPTION_REPR.match(body)
        if exception is None:
            self.errors.append((symbols, "", body))
        else:
            self.errors.append((symbols, exception["kind"], exception["text"].strip().strip("'\"")))

    def for_ticker(self, ticker: str) -> list[tuple[str, str]]:
        return [(kind, text) for symbols, kind, text in self.errors if not symbols or ticker in symbols]


def normalize_yahoo_frame(frame: pd.DataFrame, ticker: str, *, exchange_tz: str) -> pd.DataFrame:
    """A yfinance frame (`download`'s or `Ticker.history`'s) as a raw bar frame; SourceError when
    columns are missing."""
    import pandas as pd

    data = frame
    if isinstance(data.columns, pd.MultiIndex):
        level: int | str | None = "Ticker" if "Ticker" in (data.columns.names or []) else None
        if level is None:
            level = next(
                (i for i in range(data.columns.nlevels) if ticker in data.columns.get_level_values(i)),
                data.columns.nlevels - 1,
            )
        symbols = list(dict.fromkeys(data.columns.get_level_values(level)))
        if ticker in symbols:
            data = data.xs(ticker, axis=1, level=level)
        elif len(symbols) == 1:
            data = data.droplevel(level, axis=1)
        else:
            raise SourceError(
                f"Yahoo Finance answered for {', '.join(map(str, symbols))} but not {ticker}.",
                hint=_HINT_FAILED,
            )
    data = data.rename(columns=lambda column: str(column).strip().lower().replace(" ", "_"))
    missing = [name for name in BAR_COLUMNS if name not in data.columns]
    if missing:
        raise SourceError(
            f"Yahoo Finance's frame for {ticker} lacks column(s) {', '.join(missing)} "
            f"(got {', '.join(map(str, frame.columns))}).",
            hint=_HINT_FAILED,
        )
    index = pd.DatetimeIndex(data.index)
    if index.tz is not None:
        if str(index.tz) in _UTC_NAMES:
            index = index.tz_convert(exchange_tz)
        index = index.tz_localize(None)  # daily bars are stamped at the exchange's midnight
    columns = (*BAR_COLUMNS, "adj_close") if "adj_close" in data.columns else BAR_COLUMNS
    raw = pd.DataFrame(
        {name: pd.to_numeric(data[name], errors="coerce").astype("float64").to_numpy() for name in columns},
        index=pd.DatetimeIndex(index.normalize(), name="date"),
    )
    # A date arriving twice (two timestamps of one day) is settled by validation.
    return adjusted_to_close(raw).sort_index(kind="stable")


class YahooSource:
    """Bars from Yahoo Finance through yfinance."""

    name = "yahoo"

    def __init__(
        self, *, cache_dir: Path, timeout_s: float = 30.0, exchange_tz: str = "America/New_York"
    ) -> None:
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.exchange_tz = exchange_tz
        self._prepared = False

    def _yfinance(self) -> Any:
        import yfinance

        if not self._prepared:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            yfinance.set_tz_cache_location(str(self.cache_dir))
            self._prepared = True
        return yfinance

    def fetch(self, ticker: str, *, start: date, end: date) -> SourceBars:
        yf = self._yfinance()
        capture = _ErrorCapture()
        yf_logger = logging.getLogger("yfinance")
        propagate = yf_logger.propagate
        yf_logger.addHandler(capture)
        # We report yfinance's errors ourselves; show its raw lines only with --verbose.
        yf_logger.propagate = logging.getLogger().isEnabledFor(logging.DEBUG)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pandas deprecations inside yfinance
                frame = yf.download(
                    ticker,
                    start=start.isoformat(),
                    end=(end + timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
                    interval="1d",
                    auto_adjust=True,
                    actions=False,
                    progress=False,
                    threads=False,
                    ignore_tz=False,
                    multi_level_index=True,
                    timeout=self.timeout_s,
                )
        except Exception as exc:  # download() swallows per-ticker errors, but not necessarily all
            kind, text = type(exc).__name__, str(exc)
            if classify(kind, text) != "no_data":
                raise self._error(ticker, kind, text) from exc
            return SourceBars(ticker=ticker, bars=empty_bars(), note=text)
        finally:
            yf_logger.removeHandler(capture)
            yf_logger.propagate = propagate

        errors = capture.for_ticker(ticker)
        if frame is None or frame.dropna(how="all").empty:
            for kind, text in errors:
                if classify(kind, text) != "no_data":
                    raise self._error(ticker, kind, text)
            note = errors[0][1] if errors else f"Yahoo Finance returned no bars from {start} to {end}"
            return SourceBars(ticker=ticker, bars=empty_bars(), note=note)
        raw = normalize_yahoo_frame(frame, ticker, exchange_tz=self.exchange_tz)
        return finish(ticker, raw, start, end)

    @staticmethod
    def _error(ticker: str, kind: str, text: str) -> SourceError:
        what = f"{kind}: {text}" if kind else text
        if classify(kind, text) == "transient":
            return TransientSourceError(f"Yahoo Finance failed for {ticker}: {what}", hint=_HINT_TRANSIENT)
        return SourceError(f"Yahoo Finance failed for {ticker}: {what}", hint=_HINT_FAILED)
