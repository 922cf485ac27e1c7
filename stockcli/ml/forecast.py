"""The one forecasting primitive: raw bars -> the model's own inputs -> predicted closes.

Daily prediction, promotion and backtests all call `forecast`, and it rebuilds the inputs with the
model bundle's own feature spec and scalers (the ones frozen when its dataset was built), so
training and serving cannot drift apart. Pure computation: no database, no registry, no clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from torch import nn

    from stockcli.ml.registry import ModelBundle


@dataclass(frozen=True)
class ForecastResult:
    """Predicted next-session closes: row i is the forecast made with bars up to `base_dates[i]`."""

    tickers: tuple[str, ...]
    base_dates: list[date]
    base_closes: np.ndarray  # (n, stocks): the last known close of each row
    predicted_closes: np.ndarray  # (n, stocks)
    target_kind: str
    model_version: str | None = None


def forecast(
    bundle: ModelBundle,
    bars: Mapping[str, pd.DataFrame],
    as_of_dates: Sequence[date],
    *,
    device: str = "cpu",
    batch_size: int = 1024,
) -> ForecastResult:
    """Predict the next-session close of every bundle ticker for each date in `as_of_dates`.

    `bars` maps ticker -> raw daily bars (as `db.bars.load_bars` returns them); only bars up to each
    as-of date are used for that date's inputs; a date that is not a session uses the last session
    on or before it. Raises NoDataError when a ticker the model needs has no bars or a date has too
    little history behind it.
    """
    import numpy as np

    from stockcli.features.dataset import build_inputs, inverse_target
    from stockcli.ml.training import predict

    inputs = build_inputs(
        spec=bundle.spec,
        scalers=bundle.scalers,
        bars=bars,
        as_of_dates=list(as_of_dates),
    )
    base_closes = np.asarray(inputs.base_closes, dtype=np.float64)
    if inputs.x.shape[0] == 0:
        predicted = np.zeros((0, len(bundle.tickers)), dtype=np.float64)
    else:
        with _single_thread_for(inputs.x.shape[0]):
            scaled = predict(bundle.model, inputs.x, batch_size=batch_size, device=device)
        predicted = np.asarray(inverse_target(scaled, base_closes, bundle.scalers), dtype=np.float64)
        predicted = apply_calibration(predicted, base_closes, bundle.scalers)
    return ForecastResult(
        tickers=tuple(bundle.tickers),
        base_dates=list(inputs.base_dates),
        base_closes=base_closes,
        predicted_closes=predicted,
        target_kind=bundle.target_kind,
        model_version=bundle.version,
    )


# Up to this many windows, inference runs on one thread (see `_single_thread_for`).
SINGLE_THREAD_WINDOWS = 64


@contextlib.contextmanager
def _single_thread_for(n_windows: int) -> Iterator[None]:
    """Run a small inference on one torch thread, then restore the thread count.

    A forward pass over a few windows is dozens of tiny parallel regions (one per LSTM step and
    layer). With two threads, each region ends in a barrier that waits for the other thread; when
    another process holds the other core, every barrier waits for a scheduler slice, and the daily
    forecast of one window took 0.8 s instead of 1 ms on a busy 2-core machine.
    """
    import torch

    threads = torch.get_num_threads()
    if n_windows > SINGLE_THREAD_WINDOWS or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def predict_windows(
    model: nn.Module,
    scalers: Mapping[str, Any],
    x: np.ndarray,
    base_closes: np.ndarray,
    *,
    device: str = "cpu",
) -> np.ndarray:
    """Predicted closes for prepared windows `x` (a built dataset's split), inverted with `scalers`."""
    import numpy as np

    from stockcli.features.dataset import inverse_target
    from stockcli.ml.training import predict

    scaled = predict(model, x, device=device)
    closes = np.asarray(base_closes, dtype=np.float64)
    predicted = np.asarray(inverse_target(scaled, closes, scalers), dtype=np.float64)
    return apply_calibration(predicted, closes, scalers)


SHRINK_GRID = tuple(step / 20 for step in range(21))


def apply_calibration(
    predicted: np.ndarray, base_closes: np.ndarray, scalers: Mapping[str, Any]
) -> np.ndarray:
    """Shrink each ticker's predicted move from its last close by the factor fit on validation.

    A factor of 1 keeps the network's prediction, 0 falls back to the naive forecast (next close =
    last close). Bundles without a calibration entry are returned unchanged.
    """
    import numpy as np

    shrink = (scalers.get("calibration") or {}).get("shrink")
    if shrink is None:
        return predicted
    factors = np.asarray(shrink, dtype=np.float64)[None, :]
    return base_closes + factors * (predicted - base_closes)


def fit_shrinkage(
    predicted: np.ndarray, actual: np.ndarray, base_closes: np.ndarray, grid: Sequence[float] = SHRINK_GRID
) -> list[float]:
    """Per ticker, the factor in `grid` whose shrunk predictions have the lowest MAE on these rows.

    Fit on the validation split only: a network with no signal there gets 0 and serves the naive
    forecast instead of noise; one with signal keeps (most of) its moves.
    """
    import numpy as np

    moves = predicted - base_closes
    factors: list[float] = []
    for column in range(predicted.shape[1]):
        errors = [
            float(np.mean(np.abs(base_closes[:, column] + factor * moves[:, column] - actual[:, column])))
            for factor in grid
        ]
        factors.append(float(grid[int(np.argmin(errors))]))
    return factors
