"""The adaptive interval state (adaptive conformal inference) survives restarts and SIGKILL.

Scoring writes the scored predictions and the moved interval levels in one transaction
(`services.monitor.evaluate_matured`). Here the scoring runs in a real subprocess on SQLite and on
PostgreSQL: once to completion (the state outlives the process and its engine), once killed by SIGKILL
inside the scoring transaction, after the scored rows were written and before the interval state was
(the transaction must leave nothing behind), and then again. After the re-run every prediction has
taught the state exactly once: each level equals the value computed here by hand.

stockcli has no `checkpoint` inside the scoring transaction (a missing hook: `STOCKCLI_KILL_AT` cannot
stop a run there), so the kill is placed by an SQLAlchemy event in the subprocess: it fires when the
statement that writes `interval_state` is about to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from stockcli.clock import trading_calendar
from stockcli.config import Settings, load_settings
from stockcli.db import predictions as predictions_db
from stockcli.db.bars import upsert_bars
from stockcli.db.engine import open_database
from stockcli.db.models import IntervalState, ModelPerformance
from stockcli.db.serving import load_interval_state
from stockcli.db.store import utcnow
from stockcli.services.monitor import evaluate_matured

REPO = Path(__file__).resolve().parents[2]
KILLED = -9
TICKERS = ("AAA", "BBB")
GAMMA = 0.05
WIDTH = 0.006  # log-return sigma of the stored intervals: too narrow for 1% moves, so misses happen
Z = np.array([-1.959964, -1.281552, 0.0, 1.281552, 1.959964])
SESSIONS = trading_calendar("XNYS").sessions(date(2012, 10, 1), date(2013, 3, 1))[:13]

# Scores everything matured through argv[2]; with argv[3] == "kill", SIGKILLs itself when the
# statement writing `interval_state` is about to run, i.e. inside the scoring transaction, after the
# scored predictions were written in it.
SCORER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import date
    from pathlib import Path
    from sqlalchemy import event
    from stockcli.config import load_settings
    from stockcli.db.engine import open_database
    from stockcli.services.monitor import evaluate_matured

    settings = load_settings(Path(sys.argv[1]), environ={})
    engine = open_database(settings)
    if sys.argv[3] == "kill":
        @event.listens_for(engine, "before_cursor_execute")
        def kill(connection, cursor, statement, parameters, context, executemany):
            if statement.lstrip().lower().startswith("insert into interval_state"):
                os.kill(os.getpid(), signal.SIGKILL)
    evaluated, pending = evaluate_matured(engine, through=date.fromisoformat(sys.argv[2]), settings=settings)
    print(evaluated, pending)
    """
)


def closes() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        t: level * np.exp(np.cumsum(rng.normal(0.0, 0.01, len(SESSIONS))))
        for t, level in zip(TICKERS, (50.0, 8.0), strict=True)
    }


def seed(engine: Engine) -> None:
    """Bars of every session; for sessions 1.. a naive prediction with N(0, WIDTH) quantiles, GARCH-served."""
    bars, predictions = [], []
    for ticker, values in closes().items():
        for index, day in enumerate(SESSIONS):
            close = float(values[index])
            bars.append(
                {
                    "ticker": ticker,
                    "date": day,
                    "open": close,
                    "high": close,
                    "low": close,
                    "close": close,
                    "volume": 1,
                    "source": "test",
                    "fetched_at": utcnow(),
                }
            )
            if index == 0:
                continue
            base = float(values[index - 1])
            quantiles = base * np.exp(WIDTH * Z)
            predictions.append(
                {
                    "target_date": day,
                    "ticker": ticker,
                    "model_version": "1",
                    "as_of": SESSIONS[index - 1],
                    "base_date": SESSIONS[index - 1],
                    "base_close": base,
                    "predicted_close": base,
                    "dataset_run_id": "ds",
                    "created_at": utcnow(),
                    **dict(zip(("q025", "q10", "q50", "q90", "q975"), map(float, quantiles), strict=True)),
                    "p_up": 0.5,
                    "source": "naive",
                    "interval_source": "garch",
                    "unseen": False,
                }
            )
    with engine.begin() as connection:
        upsert_bars(connection, bars)
    predictions_db.save_predictions(engine, predictions)


def by_hand(through: int) -> dict[tuple[str, int], tuple[float, int, int]]:
    """(ticker, level) -> (alpha, updates, misses) after scoring targets 1..through once each, in order."""
    out = {}
    for ticker, values in closes().items():
        for level, target, column in ((80, 0.2, 3), (95, 0.05, 4)):
            alpha, misses = target, 0
            for index in range(1, through + 1):
                base, actual = values[index - 1], values[index]
                half = WIDTH * Z[column]
                miss = not (base * np.exp(-half) <= actual <= base * np.exp(half))
                alpha += GAMMA * (target - miss)
                misses += miss
            out[(ticker, level)] = (alpha, through, misses)
    return out


def state_of(engine: Engine) -> dict[tuple[str, int], tuple[float, int, int]]:
    return {key: (s.alpha, s.n_updates, s.misses) for key, s in load_interval_state(engine).items()}


def assert_state(engine: Engine, expected: dict[tuple[str, int], tuple[float, int, int]]) -> None:
    """The stored levels equal `expected`: alphas to rounding, update and miss counts exactly."""
    found = state_of(engine)
    assert set(found) == set(expected)
    for key, (alpha, updates, misses) in expected.items():
        assert found[key][0] == pytest.approx(alpha, abs=1e-12), key
        assert found[key][1:] == (updates, misses), key


def scored(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(ModelPerformance)).scalar_one())


def score_in_subprocess(config: Path, through: date, *, kill: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
    return subprocess.run(
        [sys.executable, "-c", SCORER, str(config), through.isoformat(), "kill" if kill else "run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def workspace(tmp_path: Path, database_url: str) -> Any:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[storage]\ndata_dir = "data"\ndatabase_url = "{database_url}"\n[intervals]\naci_gamma = {GAMMA}\n',
        encoding="utf-8",
    )
    settings = load_settings(config, environ={})
    engine = open_database(settings)
    seed(engine)
    engine.dispose()
    return config, settings


def fresh_engine(settings: Settings) -> Engine:
    """A new engine, as a restarted process would open."""
    return open_database(settings)


def test_state_survives_a_restart_and_a_sigkill_inside_scoring_and_learns_once(workspace: Any) -> None:
    config, settings = workspace

    # 1. A process scores the first five sessions and exits: the state outlives it and its engine.
    first = score_in_subprocess(config, SESSIONS[5], kill=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [str(5 * len(TICKERS)), "0"]
    engine = fresh_engine(settings)
    assert_state(engine, by_hand(5))
    assert scored(engine) == 5 * len(TICKERS)
    assert 0 < by_hand(5)[("AAA", 80)][2] < 5  # hits and misses both taught it
    engine.dispose()

    # 2. The next process is killed inside the scoring transaction, after writing the scored rows:
    # neither they nor any move of the levels survive.
    killed = score_in_subprocess(config, SESSIONS[12], kill=True)
    assert killed.returncode == KILLED, killed.stdout + killed.stderr
    engine = fresh_engine(settings)
    assert_state(engine, by_hand(5))
    assert scored(engine) == 5 * len(TICKERS)

    # 3. The re-run scores the rest once; each prediction has taught the state exactly once.
    evaluated, pending = evaluate_matured(engine, through=SESSIONS[12], settings=settings)
    assert (evaluated, pending) == (7 * len(TICKERS), 0)
    expected = by_hand(12)
    assert_state(engine, expected)
    assert scored(engine) == 12 * len(TICKERS)
    with engine.connect() as connection:
        last = set(connection.execute(select(IntervalState.last_target_date)).scalars())
    assert last == {SESSIONS[12]}

    # 4. Running again (another process) changes nothing.
    again = score_in_subprocess(config, SESSIONS[12], kill=False)
    assert again.returncode == 0 and again.stdout.split() == ["0", "0"], again.stderr
    assert_state(engine, expected)
    engine.dispose()
