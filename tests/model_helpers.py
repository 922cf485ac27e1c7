"""Shared set-up for the model tests: a tiny real dataset from the bundled sample bars."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings, load_settings

AS_OF = date(2013, 3, 1)
TINY_INDICATORS = [{"name": "rsi", "window": 14}, {"name": "log_return"}, {"name": "sma", "window": 10}]


def tiny_settings(data_dir: Path, **overrides: dict[str, Any]) -> Settings:
    """Two tickers, ~20 months, three indicators, 10-session windows, a hidden size of 8, 3 epochs."""
    sections: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(data_dir)},
        "data": {"tickers": ["GOOG", "MSFT"], "start": "2011-06-01"},
        "features": {"indicators": TINY_INDICATORS},
        "dataset": {"sequence_length": 10},
        "training": {"hidden_size": 8, "epochs": 3, "patience": 3, "batch_size": 32, "num_heads": 2},
    }
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    return load_settings(None, environ={}, overrides=sections)


def tiny_config_toml(data_dir: Path, model_name: str) -> str:
    """The same settings as a config file (for CLI tests)."""
    return f"""
[storage]
data_dir = "{data_dir}"
[data]
tickers = ["GOOG", "MSFT"]
start = 2011-06-01
[features]
indicators = [{{ name = "rsi", window = 14 }}, {{ name = "log_return" }}, {{ name = "sma", window = 10 }}]
[dataset]
sequence_length = 10
[training]
hidden_size = 8
epochs = 2
patience = 2
batch_size = 32
num_heads = 2
[mlflow]
model_name = "{model_name}"
"""


def build_dataset(settings: Settings, engine: Engine, as_of: date = AS_OF) -> str:
    """Fetch the sample bars, process and build; returns the dataset run id."""
    from stockcli.services.build import build
    from stockcli.services.fetch import fetch
    from stockcli.services.process import process

    fetch(settings=settings, engine=engine, as_of=as_of)
    processed = process(settings=settings, engine=engine, as_of=as_of)
    build(settings=settings, engine=engine, run_id=processed.run_id)
    return processed.run_id
