"""Market-data sources behind one small interface (`BarSource`): `sample`, `csv` and `yahoo`."""

from __future__ import annotations

from pathlib import Path

from stockcli.config import SOURCES, Settings
from stockcli.errors import ConfigError
from stockcli.sources.base import BarSource, fetch_with_retries

__all__ = ["BarSource", "fetch_with_retries", "get_source"]


def get_source(settings: Settings, name: str | None = None, csv_dir: Path | None = None) -> BarSource:
    """The source to fetch from: `name`, else `csv` when `csv_dir` is given, else `[data] source`.

    Raises ConfigError for an unknown name or a `csv` source without a folder.
    """
    chosen = name or ("csv" if csv_dir is not None else settings.data.source)
    if chosen not in SOURCES:
        raise ConfigError(f"Unknown source {chosen!r}.", hint=f"Use one of {', '.join(SOURCES)}.")
    if chosen == "sample":
        from stockcli.sources.sample import SampleSource

        return SampleSource()
    if chosen == "csv":
        from stockcli.sources.csv import CsvSource

        directory = csv_dir if csv_dir is not None else settings.data.csv_dir
        if directory is None:
            raise ConfigError(
                "The csv source needs a folder of <TICKER>.csv files.",
                hint="Pass --csv-dir DIR or set [data] csv_dir in config.toml.",
            )
        directory = directory.expanduser()
        if not directory.is_dir():
            raise ConfigError(
                f"CSV folder {directory} does not exist.",
                hint="Pass --csv-dir with an existing folder of <TICKER>.csv files, or fix [data] csv_dir.",
            )
        return CsvSource(directory)
    from stockcli.clock import exchange_timezone
    from stockcli.sources.yahoo import YahooSource

    return YahooSource(
        cache_dir=settings.data_dir / "yfinance",
        timeout_s=settings.data.request_timeout_s,
        exchange_tz=str(exchange_timezone(settings.data.exchange)),
    )
