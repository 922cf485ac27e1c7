"""Every list of allowed values, defined once as a `Literal`, with its tuple where code iterates it.
Settings validate against them and the CLI offers them; nothing heavy is imported here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from stockcli.errors import ConfigError, StockCliError

Source = Literal["sample", "csv", "yahoo"]
# The global model learns the next-session log return, which is scale-free; a price target is not.
TargetKind = Literal["return"]
ModelType = Literal["lstm", "lstm_attention", "lstm_cross_attention"]
Device = Literal["cpu", "cuda", "auto"]
Distribution = Literal["student_t", "normal"]
PromotionMetric = Literal["mae", "rmse", "mape", "winkler_95", "pinball"]
# What `[notify] events` may choose: a failed run, a retrain, a promotion, a close outside its 95%
# interval, the summary of a daily run.
NotifyEvent = Literal["failure", "retrain", "promotion", "band_break", "summary"]
# Statistical interval candidates (the network competes beside them as "network").
Candidate = Literal["rolling", "garch", "gjr", "har_range", "blend"]
# Any interval source a selection may serve: a statistical candidate or the network.
IntervalSource = Literal["rolling", "garch", "gjr", "har_range", "blend", "network"]
RangeEstimator = Literal["garman_klass", "parkinson"]
IntervalMetric = Literal["pinball", "winkler_95"]

SOURCES: tuple[Source, ...] = get_args(Source)
MODEL_TYPES: tuple[ModelType, ...] = get_args(ModelType)
DISTRIBUTIONS: tuple[Distribution, ...] = get_args(Distribution)
PROMOTION_METRICS: tuple[PromotionMetric, ...] = get_args(PromotionMetric)
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)
CANDIDATES: tuple[Candidate, ...] = get_args(Candidate)
# The order in which challengers of the incumbent are tested (`[forecasters] test_order`): chosen on
# the validation years 2008-2011 of the sample, best skill against GARCH first.
TEST_ORDER: tuple[IntervalSource, ...] = ("blend", "har_range", "gjr", "network", "rolling")
# Sessions ahead the statistical candidates forecast by default (`[forecasters] horizons`).
HORIZONS: tuple[int, ...] = (1, 5, 20)


def check_choice(
    what: str, value: str, allowed: Sequence[str], error: type[StockCliError] = ConfigError
) -> None:
    """Raise `error` unless `value` (a `what`) is one of `allowed`."""
    if value not in allowed:
        raise error(f"Unknown {what} {value!r}.", hint=f"Use one of {', '.join(allowed)}.")
