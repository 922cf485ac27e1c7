"""`python -m tests.faults.yahoo_runner ARGS...`: run the real `stockcli ARGS...` in this process with
Yahoo Finance faked at yfinance's network boundary, for tests that need a separate process (a `TZ`
environment variable, a kill) where pytest's monkeypatch cannot reach.

`STOCKCLI_FAKE_YAHOO` holds JSON `{ticker: {"start": ..., "end": ..., "serve_tz": ...}}`: the sample
bars of each ticker from start to end, their index converted to `serve_tz` (default: the exchange's
zone; "UTC" is how some Yahoo answers arrive).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def install(spec: dict[str, dict[str, str]]) -> None:
    import yfinance.base

    from tests.fakes_yfinance import FakeYahoo, history_frame

    histories = {}
    for ticker, part in spec.items():
        frame = history_frame(ticker, part["start"], part["end"])
        if part.get("serve_tz"):
            frame.index = frame.index.tz_convert(part["serve_tz"])
        histories[ticker] = frame
    fake = FakeYahoo(histories=histories)

    def history(ticker_object: Any, *args: Any, **kwargs: Any) -> Any:
        return fake.history(ticker_object.ticker, **kwargs)

    yfinance.base.TickerBase.history = history  # type: ignore[method-assign]


def main() -> None:
    install(json.loads(os.environ["STOCKCLI_FAKE_YAHOO"]))
    from stockcli.cli.app import main as stockcli_main

    stockcli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
