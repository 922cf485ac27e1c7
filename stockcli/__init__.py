"""stockcli: the whole life of a daily stock-price model in one CLI."""

__version__ = "0.1.0"
