"""The `sample` source: real daily bars bundled inside the package, so a fresh machine works offline.

GOOG, MSFT, ^GSPC and ^IXIC up to 2013-03-01; file names drop the leading `^` (GSPC.csv holds ^GSPC).
See `data/README.md` next to the files for their provenance.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from stockcli.sources.base import SourceBars, empty_bars
from stockcli.sources.csv import CsvSource

SAMPLE_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_TICKERS = ("GOOG", "MSFT", "^GSPC", "^IXIC")
SAMPLE_LAST_DATE = "2013-03-01"


class SampleSource(CsvSource):
    """The bundled sample bars (a CSV source over the package's own data folder)."""

    def __init__(self) -> None:
        super().__init__(SAMPLE_DIR, name="sample")

    def fetch(self, ticker: str, *, start: date, end: date) -> SourceBars:
        if self.path_for(ticker) is None:
            return SourceBars(
                ticker=ticker,
                bars=empty_bars(),
                note=f"the bundled sample holds only {', '.join(SAMPLE_TICKERS)} (up to {SAMPLE_LAST_DATE})",
            )
        return super().fetch(ticker, start=start, end=end)
