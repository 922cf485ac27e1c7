"""Typed response models of the JSON endpoints: what `/openapi.json` documents, key by key.
The routes answer cached bytes, so these document the shapes (tests hold them equal), not build them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LatestTableRow(BaseModel):
    """The newest prediction of one ticker: the replaced system's four keys, then stockcli's."""

    model_config = ConfigDict(extra="forbid")

    ticker: str = Field(description="The ticker, e.g. `GOOG` or `^GSPC`.")
    predicted_price: float | None = Field(
        description="The close served for the target session (kept from the replaced system; "
        "the same as `predicted_close`)."
    )
    date: dt.date = Field(description="The target session, ISO date (kept; the same as `target_date`).")
    model_mlflow_run_id: str | None = Field(
        description="The MLflow run that trained the model version which made this prediction "
        "(kept from the replaced system); null when the registry does not know that version or "
        "cannot be read."
    )
    target_date: dt.date = Field(description="The trading session predicted: the one after `base_date`.")
    base_date: dt.date = Field(description="The newest closed session the prediction starts from.")
    base_close: float | None = Field(description="The close of `base_date`.")
    predicted_close: float | None = Field(description="The close served for `target_date`.")
    change: float | None = Field(description="`predicted_close / base_close - 1`, a fraction.")
    model_version: str = Field(description="The registered model version that made the prediction.")
    as_of: dt.date = Field(description="The as-of date of the run that made the prediction.")
    dataset_run_id: str = Field(description="The dataset the model version was trained on.")
    created_at: dt.datetime | None = Field(description="When the prediction was stored (UTC).")
    lower_80: float | None = Field(description="Lower bound of the 80% interval (the 10% quantile).")
    upper_80: float | None = Field(description="Upper bound of the 80% interval (the 90% quantile).")
    lower_95: float | None = Field(description="Lower bound of the 95% interval (the 2.5% quantile).")
    upper_95: float | None = Field(description="Upper bound of the 95% interval (the 97.5% quantile).")
    median: float | None = Field(description="The median forecast close (the 50% quantile).")
    p_up: float | None = Field(description="The chance that the target close is above `base_close`.")
    source: str | None = Field(
        description="What serves the point forecast: `model`, or `naive` (the last close)."
    )
    p_value: float | None = Field(description="p-value of the paired test that chose `source`.")
    interval_source: str | None = Field(
        description="What serves the intervals: `model` or a baseline such as `garch` or `rolling`."
    )
    interval_p_value: float | None = Field(description="p-value of the test that chose `interval_source`.")
    unseen: bool = Field(description="True when the model version was not trained on this ticker.")
    change_pct: float | None = Field(description="`change` in percent.")


class LatestTable(BaseModel):
    """`GET /predictions/latest_for_table`: the newest prediction per ticker, as table rows."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["success"] = Field(description="Always `success` (errors answer `detail` instead).")
    data: list[LatestTableRow] = Field(description="The newest stored prediction of each ticker.")
