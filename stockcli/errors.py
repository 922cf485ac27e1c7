"""One error hierarchy; `cli/app.py` is the only place that turns these into exit codes (cron reads them)."""

from __future__ import annotations

from stockcli.redact import redact_url

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_NOTHING = 4
EXIT_LOCKED = 5
# What each non-zero exit code means, as a failure notification says it.
EXIT_MEANINGS = {
    EXIT_UNEXPECTED: "unexpected error",
    EXIT_USAGE: "usage or configuration error",
    EXIT_PARTIAL: "partial: some tickers failed, the rest was saved",
    EXIT_NOTHING: "nothing to do: no data or no production model",
    EXIT_LOCKED: "another run holds the lock",
}


class StockCliError(Exception):
    """An error a user can act on: `message` says what happened, `hint` what to do next."""

    exit_code: int = EXIT_UNEXPECTED

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        # Messages quote URLs and the texts of other libraries' errors: never a password in them.
        message = redact_url(message)
        super().__init__(message)
        self.message = message
        self.hint = redact_url(hint) if hint else hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(StockCliError):
    """The configuration file, environment or options are invalid."""

    exit_code = EXIT_USAGE


class UsageError(StockCliError):
    """The command was called with arguments that cannot work (unknown id, bad date...)."""

    exit_code = EXIT_USAGE


class MissingExtraError(StockCliError):
    """An optional part of stockcli is not installed (`stockcli.extras` names the extra to install)."""

    exit_code = EXIT_USAGE


class InputDataError(StockCliError):
    """Input data (a CSV file, a frame from a source) is malformed; nothing was stored."""

    exit_code = EXIT_USAGE


class NoDataError(StockCliError):
    """There is nothing to work with: no stored bars, too little history, stale data."""

    exit_code = EXIT_NOTHING


class NoProductionModelError(StockCliError):
    """No model version holds the Production alias yet."""

    exit_code = EXIT_NOTHING


class PartialFailure(StockCliError):
    """Some tickers failed; the others were saved."""

    exit_code = EXIT_PARTIAL


class LockHeldError(StockCliError):
    """Another stockcli run holds the run lock."""

    exit_code = EXIT_LOCKED


class LockLostError(LockHeldError):
    """A run lost its run lock while it worked (lock file removed, lock session ended): it stopped."""


class RegistryError(StockCliError):
    """The MLflow tracking store or model registry failed or cannot be reached."""


class SourceError(StockCliError):
    """A market-data source failed for a ticker (network, rate limit, bad response)."""


class TransientSourceError(SourceError):
    """A source failure worth retrying (timeout, rate limit)."""
