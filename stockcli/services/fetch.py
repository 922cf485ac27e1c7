"""`fetch`: bring the stored daily bars of each ticker up to the last closed session on or before as-of.

Per ticker, in its own transaction (source errors retried with backoff): fetch from `[data] overlap_sessions` before the newest stored bar
(the first time from `[data] start`), drop bars that jump by more than `[data] max_jump_factor` from
the previous close, and upsert only new and changed rows. When the overlap moved as a whole by more
than `[data] restatement_tolerance` (a split or dividend re-adjusted the history), or the stored bars
came from another source, the whole history is fetched again and replaces the stored one, and the
ticker's predictions are restated with it (`_restatement_rule`), so adjustment bases never mix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from stockcli import clock
from stockcli.config import Settings, normalize_ticker
from stockcli.db.bars import (
    close_before,
    delete_bars,
    last_dates,
    sources_by_ticker,
    stored_bars,
    upsert_bars,
)
from stockcli.db.predictions import Restatement, restate_predictions
from stockcli.db.serving import forget_fits
from stockcli.db.store import utcnow
from stockcli.errors import (
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    InputDataError,
    NoDataError,
    PartialFailure,
    SourceError,
    StockCliError,
)
from stockcli.services.runtime import checkpoint
from stockcli.sources import BarSource, fetch_with_retries, get_source
from stockcli.sources.base import (
    BAR_COLUMNS,
    IMPLAUSIBLE_JUMP,
    PRICE_COLUMNS,
    ROUNDING_ABS,
    SourceBars,
    clip_range,
    drop_implausible_jumps,
    suspected_split,
)
from stockcli.storage import disk_full_error

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

# Statuses whose valid rows were stored: `partial` also rejected some (exit 3 for that ticker).
SAVED_STATUSES = ("ok", "replaced", "partial")
# `skipped`: an optional series (har_range's market, when nobody named it) the source could not give.
SUCCESS_STATUSES = ("ok", "replaced", "skipped")
MARKET_MISSING = (
    "optional: the market series of har_range, which fits without its market term until {market}'s "
    'bars can be fetched (or [forecasters] har_market = "" stops asking for them)'
)

ProgressCallback = Callable[[str, int, int], None]
# A ticker's keys in fetch --json after "rows", in order (README, "JSON output").
TICKER_JSON_KEYS = (
    *("last_date", "status", "error", "added", "updated", "deleted", "rejected", "rejected_reasons"),
    *("fetched_from", "note", "hint"),
)


@dataclass(frozen=True)
class TickerFetch:
    """The outcome for one ticker: `ok`, `replaced` (history restated and replaced whole), `partial`
    (valid rows stored, some rejected: `error` says which, `hint` what to do), `no_data`, `failed` or
    `skipped` (an optional series that could not be fetched; `error` says why, `note` what follows)."""

    ticker: str
    status: str
    added: int = 0
    updated: int = 0
    deleted: int = 0
    rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    last_date: date | None = None
    fetched_from: date | None = None
    note: str | None = None
    error: str | None = None
    hint: str | None = None
    exit_code: int = EXIT_OK

    @property
    def rows(self) -> int:
        """Rows this run wrote with new values (added + updated)."""
        return self.added + self.updated

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCESS_STATUSES

    def to_dict(self) -> dict[str, Any]:
        plain = {key: v.isoformat() if isinstance(v, date) else v for key, v in asdict(self).items()}
        return {"rows": self.rows, **{key: plain[key] for key in TICKER_JSON_KEYS}}


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one fetch: `ok` (every ticker saved whole), `partial` (some failed or had rows
    rejected) or `failed` (none saved)."""

    status: str
    source: str
    as_of: date
    cutoff: date
    tickers: tuple[TickerFetch, ...]

    @property
    def exit_code(self) -> int:
        """0 ok, 3 partial; when every ticker failed: 1 if any failed unexpectedly, else 2 for bad
        input, else 4 (no data at all)."""
        if self.status == "ok":
            return EXIT_OK
        if self.status == "partial":
            return EXIT_PARTIAL
        codes = {t.exit_code for t in self.tickers if not t.succeeded}
        return next((code for code in (EXIT_UNEXPECTED, EXIT_USAGE) if code in codes), EXIT_NOTHING)

    def to_json(self) -> dict[str, Any]:
        """`{"status": ..., "tickers": {"T": {"rows", "last_date", "status", "error", ...}}}`."""
        return {"status": self.status, "tickers": {t.ticker: t.to_dict() for t in self.tickers}}

    def details(self) -> dict[str, Any]:
        """What the run ledger keeps about this fetch."""
        return {
            "source": self.source,
            "as_of": self.as_of.isoformat(),
            "cutoff": self.cutoff.isoformat(),
            **self.to_json(),
        }

    def failure(self) -> StockCliError | None:
        """The error to report when not every ticker was saved (None when all were)."""
        failed = [t for t in self.tickers if not t.succeeded]
        if not failed:
            return None
        listed = "; ".join(f"{t.ticker}: {t.error or t.status}" for t in failed)
        message = f"{len(failed)} of {len(self.tickers)} ticker(s) not fetched in full: {listed}"
        if self.status == "partial":
            own = " ".join(f"{t.ticker}: {t.hint}" for t in failed if t.status == "partial" and t.hint)
            return PartialFailure(
                message,
                hint=(own + " " if own else "") + "The rest was saved; fix the cause and run fetch again.",
            )
        code = self.exit_code
        if code == EXIT_NOTHING:
            return NoDataError(message, hint="Check the tickers, the source (--source) and the as-of date.")
        if code == EXIT_USAGE:
            return InputDataError(message, hint="Fix the input files named above and run fetch again.")
        return SourceError(
            message,
            hint="The source failed (its network or service, as named above); the stored bars are unchanged. "
            "Run fetch again later, or with --verbose for the traceback.",
        )


def fetch(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    tickers: Sequence[str] | None = None,
    source: str | None = None,
    csv_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    now: datetime | None = None,
    sleep: Callable[[float], None] | None = None,
) -> FetchResult:
    """Fetch and store the bars of `tickers` (default: `[data] tickers`, the context series and
    `[forecasters] har_market`) up to `as_of`.

    `now` decides whether the as-of session has closed; `sleep` waits between retries. A ticker's
    failure is recorded in its result; raises ConfigError for a malformed ticker or source.
    """
    asked = tickers or (*settings.data.tickers, *settings.data.context_tickers_resolved)
    names = tuple(dict.fromkeys(normalize_ticker(t) for t in asked))
    # har_range's market series comes along when nobody named it: a source without it (a csv folder
    # without its file) leaves har_range fitting without the term, not a partial fetch every day.
    market = settings.forecasters.har_market
    optional = {normalize_ticker(market)} - set(names) if market and not tickers else set()
    names = (*names, *optional)
    bar_source = get_source(settings, source, csv_dir)
    calendar = clock.trading_calendar(settings.data.exchange)
    moment = now or utcnow()
    effective = min(as_of, clock.today(settings.data.exchange, now=moment))
    cutoff = calendar.last_closed_session(effective, now=moment)
    # What every ticker has stored, in two queries instead of two per ticker; when that fails, each
    # ticker reads its own, and a failure is that ticker's.
    try:
        stored: _Stored | None = _stored_state(engine, names, cutoff)
    except Exception:
        logger.debug("reading the stored state of %d tickers at once failed", len(names), exc_info=True)
        stored = None
    results: list[TickerFetch] = []
    for index, ticker in enumerate(names):
        job = _Job(settings, engine, bar_source, ticker, cutoff, moment, sleep or time.sleep)
        try:
            sources, newest = stored or _stored_state(engine, [ticker], cutoff)
            outcome = _fetch_ticker(job, calendar, sources.get(ticker, set()), newest.get(ticker))
        except StockCliError as exc:
            logger.info("%s: %s", ticker, exc)
            outcome = TickerFetch(
                ticker=ticker, status="failed", error=exc.message, hint=exc.hint, exit_code=exc.exit_code
            )
        except Exception as exc:
            full = disk_full_error("database", settings.database_url, exc, folder=settings.data_dir)
            if full is not None:  # every later ticker would fail alike: stop, naming the file
                raise full from exc
            logger.debug("fetch of %s failed", ticker, exc_info=True)  # the traceback with --verbose
            outcome = TickerFetch(
                ticker=ticker,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                exit_code=EXIT_UNEXPECTED,
            )
        results.append(outcome)
        checkpoint(settings, "fetch:after_ticker")
        if progress is not None:
            progress(ticker, index + 1, len(names))
    results = [
        replace(r, status="skipped", note=MARKET_MISSING.format(market=r.ticker), exit_code=EXIT_OK)
        if r.ticker in optional and r.status not in SAVED_STATUSES
        else r
        for r in results
    ]
    saved = any(r.status in SAVED_STATUSES for r in results)
    status = "ok" if all(r.succeeded for r in results) else ("partial" if saved else "failed")
    return FetchResult(
        status=status, source=bar_source.name, as_of=as_of, cutoff=cutoff, tickers=tuple(results)
    )


# The sources of each ticker's stored bars, and its newest bar up to the cutoff.
_Stored = tuple[dict[str, set[str]], dict[str, date]]


def _stored_state(engine: Engine, tickers: Sequence[str], cutoff: date) -> _Stored:
    return sources_by_ticker(engine, tickers), last_dates(engine, tickers, end=cutoff)


@dataclass(frozen=True)
class PulledBars:
    """What the source gave for one ticker from `start` up to the cutoff, and what passed the jump check."""

    start: date
    answer: SourceBars  # what the source rejected itself, and its word when it had nothing
    raw: pd.DataFrame  # the source's valid bars from `start` to the cutoff
    frame: pd.DataFrame  # `raw` less its implausible jumps
    jumps: int
    reference: float | None = None  # the close the frame's first bar was judged against

    @property
    def rejected(self) -> int:
        return self.answer.rejected + self.jumps

    @property
    def reasons(self) -> dict[str, int]:
        reasons = dict(self.answer.rejected_reasons)
        if self.jumps:
            reasons[IMPLAUSIBLE_JUMP] = reasons.get(IMPLAUSIBLE_JUMP, 0) + self.jumps
        return reasons


@dataclass(frozen=True)
class _Job:
    """One ticker's fetch: what each of its steps reads."""

    settings: Settings
    engine: Engine
    source: BarSource
    ticker: str
    cutoff: date
    fetched_at: datetime
    sleep: Callable[[float], None]

    def pull(self, start: date) -> PulledBars:
        """The source's bars from `start` to the cutoff (retried), screened for implausible jumps with
        nothing before them: the frame's first bar is the reference."""
        data = self.settings.data
        bars = fetch_with_retries(
            self.source,
            self.ticker,
            start=start,
            end=self.cutoff,
            max_retries=data.max_retries,
            backoff_s=data.retry_backoff_s,
            sleep=self.sleep,
        )
        raw = clip_range(bars.bars, start, self.cutoff)
        frame, jumps = drop_implausible_jumps(raw, max_jump_factor=data.max_jump_factor, previous_close=None)
        return PulledBars(start=start, answer=bars, raw=raw, frame=frame, jumps=jumps)


def _fetch_ticker(
    job: _Job, calendar: clock.TradingCalendar, sources: set[str], last: date | None
) -> TickerFetch:
    """Fetch and store one ticker, given its stored sources and newest bar up to the cutoff."""
    data, cutoff, name = job.settings.data, job.cutoff, job.source.name
    replace_reason = None
    if sources and sources != {name}:
        replace_reason = f"stored bars came from {', '.join(sorted(sources))}; replaced with {name}"
    start = (
        data.start if last is None or replace_reason else calendar.sessions_back(last, data.overlap_sessions)
    )
    no_data = TickerFetch(ticker=job.ticker, status="no_data", last_date=last, exit_code=EXIT_NOTHING)
    if start > cutoff:
        return replace(no_data, error=f"[data] start {data.start} is after the last closed session {cutoff}")
    pulled = job.pull(start)
    if pulled.raw.empty:
        return replace(
            no_data,
            rejected=pulled.rejected,
            rejected_reasons=pulled.reasons,
            fetched_from=start,
            error=pulled.answer.note or f"no bars from {start} to {cutoff}",
        )
    if replace_reason is None and last is not None:
        pulled, replace_reason = _against_stored(job, pulled)
    return _save(job, pulled, last, replace_reason)


def _against_stored(job: _Job, pulled: PulledBars) -> tuple[PulledBars, str | None]:
    """`pulled` judged against the stored bars it overlaps: its jumps against the last stored close, or,
    when the overlap moved as a whole, the whole history pulled again with the reason to replace it."""
    data = job.settings.data
    raw = pulled.raw
    with job.engine.connect() as connection:
        overlap = stored_bars(connection, job.ticker, start=pulled.start, end=job.cutoff)
        anchor = close_before(connection, job.ticker, raw.index[0].date())
    frame, jumps = drop_implausible_jumps(raw, max_jump_factor=data.max_jump_factor, previous_close=anchor)
    anchored = replace(pulled, frame=frame, jumps=jumps, reference=anchor)
    if not frame.empty and _max_relative_drift(overlap, frame) <= data.restatement_tolerance:
        return anchored, None  # the usual case; absurd bars dropped
    if not overlap.index.isin(pulled.frame.index).any():
        return anchored, None  # nothing to compare: the past decides
    drift = _max_relative_drift(overlap, pulled.frame)
    if drift <= data.restatement_tolerance:
        return pulled, None  # what is stored jumps just before the frame (stored while the check was off)
    # The overlap moved as a whole (a split or dividend re-adjusted the history; a bigger split than
    # max_jump_factor makes every bar "jump" from the stored close, which is why the overlap is
    # compared without that anchor): fetch everything again, replace it whole.
    again = job.pull(data.start)
    if again.frame.empty:
        raise SourceError(
            f"The history of {job.ticker} looks restated, but re-fetching it from {data.start} returned no "
            "valid bars; the stored bars were kept.",
            hint="Run fetch again later.",
        )
    return again, f"overlapping bars differ by up to {drift:.4%}: history restated, replaced whole"


def _save(job: _Job, pulled: PulledBars, last: date | None, replace_reason: str | None) -> TickerFetch:
    """Store the screened bars; the ticker's outcome: `no_data` when none passed, `partial` when rows
    were rejected, else `ok` or `replaced`."""
    frame, rejected, reasons = pulled.frame, pulled.rejected, pulled.reasons
    split = suspected_split(pulled.raw, frame, previous_close=pulled.reference) if pulled.jumps else None
    hint = _rejection_hint(job.ticker, split) if rejected else None
    if frame.empty:
        return TickerFetch(
            ticker=job.ticker,
            status="no_data",
            rejected=rejected,
            rejected_reasons=reasons,
            last_date=last,
            fetched_from=pulled.start,
            error=f"all {rejected} bar(s) from {pulled.start} to {job.cutoff} were rejected "
            f"({_counted(reasons)})" + _split_words(split),
            hint=hint,
            exit_code=EXIT_NOTHING,
        )
    added, updated, deleted, replace_reason = _write(job, pulled, replace_reason)
    # The newest stored bar up to the cutoff, without asking: every row of `frame` is stored now.
    newest = frame.index.max().date()
    if replace_reason is None and last is not None:
        newest = max(newest, last)
    status, error, exit_code = "replaced" if replace_reason else "ok", None, EXIT_OK
    if rejected:  # a history with holes or cut short: that ticker failed, loudly (what was valid is kept)
        status, exit_code = "partial", EXIT_PARTIAL
        error = (
            f"{rejected} of {rejected + len(frame)} rows rejected ({_counted(reasons)}); "
            f"the other {len(frame)} were saved" + _split_words(split)
        )
    return TickerFetch(
        ticker=job.ticker,
        status=status,
        added=added,
        updated=updated,
        deleted=deleted,
        rejected=rejected,
        rejected_reasons=reasons,
        last_date=newest,
        fetched_from=pulled.start,
        note=replace_reason,
        error=error,
        hint=hint,
        exit_code=exit_code,
    )


def _write(job: _Job, pulled: PulledBars, replace_reason: str | None) -> tuple[int, int, int, str | None]:
    """Write the screened bars in one transaction: the whole history replaced (predictions restated
    with it) when there is a `replace_reason`, else the new and changed rows. (added, updated,
    deleted, the reason with what happened to the predictions)."""
    ticker, frame = job.ticker, pulled.frame
    with job.engine.begin() as connection:
        if replace_reason is None:
            old = stored_bars(connection, ticker, start=pulled.start, end=job.cutoff)
            added, updated = _changed(old, frame)
            upsert_bars(connection, _rows(job, frame[added | updated]))
            return int(added.sum()), int(updated.sum()), 0, None
        old = stored_bars(connection, ticker)
        added, updated = _changed(old, frame)
        delete_bars(connection, ticker)
        upsert_bars(connection, _rows(job, frame))
        # Predictions made on the old basis go with it, in this transaction: never scored against
        # a close on another basis (a 2:1 split would read as a 100% error).
        rule = _restatement_rule(old, frame, job.settings.data.restatement_tolerance, job.fetched_at.date())
        rescaled, voided = restate_predictions(connection, ticker, rule)
        forget_fits(connection, ticker)  # fitted on the old bars: refitted at the next `daily`
        if rescaled or voided:
            replace_reason += f"; predictions restated with it: {rescaled} rescaled, {voided} voided"
    deleted = int((~old.index.isin(frame.index)).sum())
    return int(added.sum()), int(updated.sum()), deleted, replace_reason


def _counted(reasons: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in reasons.items())


def _split_words(split: tuple[date, float] | None) -> str:
    if split is None:
        return ""
    day, factor = split
    return (
        f"; a split detected on {day} (prices x{factor:g}): every row from then on jumps from the "
        "close before it"
    )


def _rejection_hint(ticker: str, split: tuple[date, float] | None) -> str:
    if split is not None:
        return (
            "The source's prices are not adjusted for the split: use split-adjusted prices, or re-fetch "
            f"once the source has adjusted its history (`stockcli fetch --ticker {ticker}`)."
        )
    return "Check the rejected rows at the source (in a CSV, fix them) and fetch again."


def _restatement_rule(old: pd.DataFrame, new: pd.DataFrame, tolerance: float, day: date) -> Restatement:
    """How a prediction goes with a history restated from `old` to `new`: its prices times the factor
    that moved its base close (a split moves every close by one factor; a dividend adjustment, the
    closes before its day), provided that factor also moves its target close where one was stored;
    void when no single factor restates both, or a bar it stands on is gone."""
    old_close = {stamp.date(): float(close) for stamp, close in old["close"].items()}
    new_close = {stamp.date(): float(close) for stamp, close in new["close"].items()}

    def decide(base: date, target: date) -> tuple[float | None, str | None]:
        voided = f"voided by the history restated on {day}: "
        before, after = old_close.get(base), new_close.get(base)
        if before is None or after is None:
            return None, voided + f"the bar of its base session {base} is no longer in it"
        factor = after / before
        if target in old_close:
            moved = new_close.get(target)
            if moved is None:
                return None, voided + f"the bar of its target session {target} is no longer in it"
            # Published prices are rounded (cents): both closes of a factor carry a rounding step.
            if abs(moved - factor * old_close[target]) > 2 * ROUNDING_ABS + tolerance * abs(moved):
                return None, voided + (
                    f"its base close ({base}) moved x{factor:.6g} and its target close ({target}) "
                    f"x{moved / old_close[target]:.6g}; no single factor restates its prices"
                )
        return (None, None) if abs(factor - 1.0) <= 1e-12 else (factor, None)

    return decide


def _aligned(old: pd.DataFrame, new: pd.DataFrame, columns: Sequence[str]) -> tuple[Any, Any, Any]:
    """Over `new`'s dates: whether `old` has the date, and both frames' `columns` as float64 arrays
    (`old`'s NaN where it has none)."""
    names = list(columns)
    before = old[names].reindex(new.index).to_numpy(dtype="float64")  # dates are unique in both
    return new.index.isin(old.index), before, new[names].to_numpy(dtype="float64")


def _changed(old: pd.DataFrame, new: pd.DataFrame) -> tuple[Any, Any]:
    """Boolean masks over `new`: rows not stored yet, and stored rows whose values differ."""
    import numpy as np

    present, before, after = _aligned(old, new, BAR_COLUMNS)
    # Equal up to float noise (a source that recomputes adjusted prices each call) counts as unchanged.
    same_prices = np.isclose(after[:, :-1], before[:, :-1], rtol=1e-12, atol=0.0).all(axis=1)
    return ~present, present & ~(same_prices & (after[:, -1] == before[:, -1]))


def _max_relative_drift(old: pd.DataFrame, new: pd.DataFrame) -> float:
    """The largest relative price difference between stored and fetched bars on the same dates (0
    when they share none)."""
    common, before, after = _aligned(old, new, PRICE_COLUMNS)
    if not common.any():
        return 0.0
    return float((abs(after[common] - before[common]) / abs(before[common])).max())


def _rows(job: _Job, frame: pd.DataFrame) -> list[dict[str, Any]]:
    stamp = {"source": job.source.name, "fetched_at": job.fetched_at}
    bars = frame[list(BAR_COLUMNS)].to_dict("records")  # Python floats, and ints for the volume
    return [
        {"ticker": job.ticker, "date": day, **bar, **stamp}
        for day, bar in zip(frame.index.date, bars, strict=True)
    ]
