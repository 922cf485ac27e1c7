"""Fault class: claims follow the numbers. What `train` says about the model against the naive forecast
is what its skill numbers allow at the precision they are shown: better, a tie within rounding, or
worse, ticker by ticker; a skill of 0.0% is never "beats the naive forecast"."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from stockcli.cli.model_commands import skill_verdict, worse_than_naive_line
from stockcli.ml.metrics import Evaluation, IntervalFigures, MetricBlock, PointFigures
from tests.faults.pipeline import (
    BOOTSTRAP_AS_OF,
    Workspace,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    production,
)


def evaluation_from_json(plain: Mapping[str, Any]) -> Evaluation:
    """An Evaluation from its stored JSON (`Evaluation.to_json`); keys left out stay undefined."""

    def points(values: Mapping[str, Any] | None) -> PointFigures:
        values = values or {}
        return PointFigures(
            values.get("mae"), values.get("rmse"), values.get("mape"), values.get("directional_accuracy")
        )

    def intervals(values: Mapping[str, Any] | None) -> IntervalFigures | None:
        undefined = dict.fromkeys(IntervalFigures.__dataclass_fields__, None) | {"n": 0}
        return None if values is None else IntervalFigures(**{**undefined, **values})

    def block(values: Mapping[str, Any]) -> MetricBlock:
        return MetricBlock(
            model=points(values.get("model")),
            naive=points(values.get("naive")),
            **{name: values.get(name) for name in ("skill", "skill_low", "skill_high", "up_fraction")},
            n_days=int(values.get("n_days") or 0),
            intervals=intervals(values.get("intervals")),
            baselines={name: intervals(figures) for name, figures in (values.get("baselines") or {}).items()},
        )

    return Evaluation(
        n_days=int(plain.get("n_days") or 0),
        tickers={ticker: block(values) for ticker, values in (plain.get("tickers") or {}).items()},
        average=block(plain.get("average") or {}),
    )


def metrics(average: float | None, **skills: float | None) -> dict[str, Any]:
    def block(skill: float | None) -> dict[str, Any]:
        return {"model": {"mae": 1.0}, "naive": {"mae": 1.0}, "skill": skill}

    return {"tickers": {ticker: block(skill) for ticker, skill in skills.items()}, "average": block(average)}


@pytest.mark.parametrize(
    ("skill", "verdict"),
    [
        (0.0, "tie"),
        (0.0004, "tie"),
        (-0.00049, "tie"),
        (0.0006, "better"),
        (-0.0006, "worse"),
        (None, "unknown"),
    ],
)
def test_a_skill_that_rounds_to_zero_is_a_tie(skill: float | None, verdict: str) -> None:
    assert skill_verdict(skill) == verdict


@pytest.mark.parametrize(
    ("numbers", "says", "never"),
    [
        (metrics(0.0, GOOG=0.0, MSFT=0.0), "ties the naive forecast", "beats"),
        (metrics(0.0002, GOOG=0.0004, MSFT=0.0), "ties the naive forecast", "beats"),
        (metrics(0.02, GOOG=0.03, MSFT=0.01), "beats the naive forecast", "WORSE"),
        (
            metrics(0.0, GOOG=0.01, MSFT=-0.01, IBM=0.0),
            "better for GOOG; a tie within rounding for IBM; WORSE for MSFT; on average a tie",
            "beats",
        ),
        (metrics(-0.03, GOOG=-0.02, MSFT=-0.04), "WORSE for GOOG, MSFT; on average WORSE", "beats"),
        (metrics(0.01, GOOG=0.02, MSFT=0.0), "better for GOOG; a tie within rounding for MSFT", "beats"),
    ],
)
def test_the_sentence_about_naive_follows_the_numbers(numbers: dict[str, Any], says: str, never: str) -> None:
    line = worse_than_naive_line(evaluation_from_json(numbers))
    assert says in line
    assert never not in line


def test_train_says_what_its_own_test_metrics_allow(bootstrapped: Workspace) -> None:
    from stockcli.ml import registry

    result = bootstrapped.cli("--as-of", BOOTSTRAP_AS_OF, "train")
    assert result.exit_code == 0, result.output
    version = re.search(r"version (\d+)", result.stdout)
    assert version is not None
    bundle = registry.load_bundle(bootstrapped.settings(), version.group(1))
    test_metrics = evaluation_from_json(bundle.metrics["test"])
    assert test_metrics.to_json() == bundle.metrics["test"]  # the stored JSON reads back whole
    assert worse_than_naive_line(test_metrics) in " ".join(result.stdout.split())
    verdicts = {skill_verdict(block.skill) for block in test_metrics.tickers.values()}
    if verdicts != {"better"}:
        assert "beats the naive forecast" not in result.stdout
    assert production(bootstrapped) == "1"  # train never moves Production


def test_predictions_inside_the_models_training_data_are_refused_naming_its_end(
    bootstrapped: Workspace,
) -> None:
    """Production was trained on sessions up to 2013-02-01: `predict` (and `daily`) as of an earlier day
    would store forecasts of sessions it has seen and score them as live accuracy. Exit 2, naming
    the training end; nothing stored."""
    from tests.faults.pipeline import ledger, predictions

    stored = predictions(bootstrapped.engine, with_version=True)
    for command in ("predict", "daily"):
        result = bootstrapped.cli("--as-of", "2012-12-26", command)
        assert result.exit_code == 2, result.output
        assert "inside the training data of model version 1" in result.stderr
        assert "trained on sessions up to 2013-02-01" in result.stderr
        assert predictions(bootstrapped.engine, with_version=True) == stored
        assert ledger(bootstrapped.engine)[-1][1:] == (command, "failed")
