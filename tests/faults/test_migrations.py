"""Fault class 6, migrations: schema upgrades and downgrades on a database that holds data, on SQLite
and PostgreSQL. Downgrading the initial revision drops every table by nature, so what is checked is
what an operator meets: upgrading an up-to-date database, every revision after the first taken down
and up again, a first upgrade beside other tools' tables, and a database from a newer stockcli.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    Integer,
    LargeBinary,
    String,
    Text,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.schema import Column

from stockcli.config import Settings
from stockcli.db.engine import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    open_database,
    upgrade_schema,
)
from stockcli.db.models import Base
from stockcli.db.store import array_to_bytes
from tests.conftest import Cli
from tests.faults.checks import table_state

ROWS_PER_TABLE = 3
OUR_TABLES = {table.name for table in Base.metadata.sorted_tables}


def revision_chain() -> list[str]:
    """Our revisions, oldest first (asserting on the way that the history is one straight line)."""
    script = ScriptDirectory.from_config(alembic_config())
    heads = script.get_heads()
    assert len(heads) == 1, f"the migration history has several heads: {heads}"
    chain: list[str] = []
    revision = script.get_revision(heads[0])
    while revision is not None:
        chain.append(revision.revision)
        down = revision.down_revision
        assert not isinstance(down, tuple | list), f"{revision.revision} merges several revisions"
        revision = script.get_revision(down) if down else None
    return chain[::-1]


def _value(column: Column[Any], row: int) -> Any:
    """A value of the column's type that round-trips exactly (full double precision, big integers,
    aware timestamps, text with quotes and non-ASCII)."""
    kind = column.type
    if isinstance(kind, LargeBinary):
        return array_to_bytes(np.arange(row + 3, dtype=np.float64) / 7)
    if isinstance(kind, JSON):
        return {"row": row, "values": [1.5, None, "ü'x"]}
    if isinstance(kind, Boolean):
        return row % 2 == 0
    if isinstance(kind, DateTime):
        return datetime(2013, 2, 1, 21, 30, tzinfo=UTC) + timedelta(hours=row)
    if isinstance(kind, Date):
        return date(2013, 2, 1) + timedelta(days=row)
    if isinstance(kind, Double):
        return 1234.56789012345 + row
    if isinstance(kind, BigInteger):
        return 9_000_000_000_000 + row
    if isinstance(kind, Integer):
        return 7 + row
    if isinstance(kind, Text):
        return f"row {row}: it's ünïcode\nand two lines"
    if isinstance(kind, String):
        return f"{column.name}-{row}-é"[: kind.length or 64]
    raise AssertionError(f"no sample value for {column.table.name}.{column.name} ({kind!r})")


def fill_every_table(engine: Engine) -> None:
    """ROWS_PER_TABLE rows in each of our tables (ids of autoincrement keys left to the database)."""
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            generated = table.autoincrement_column
            rows = [
                {c.name: _value(c, row) for c in table.columns if c is not generated}
                for row in range(ROWS_PER_TABLE)
            ]
            connection.execute(table.insert(), rows)


def foreign_state(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        studies = connection.execute(text("SELECT study_id, study_name FROM studies ORDER BY study_id")).all()
    return [tuple(r) for r in version] + [tuple(r) for r in studies]


@pytest.fixture
def engine(settings: Settings) -> Any:
    opened = make_engine(settings.database_url)
    yield opened
    opened.dispose()


def test_the_history_is_one_line_and_a_new_database_reaches_its_head(
    settings: Settings, engine: Engine, cli: Cli
) -> None:
    chain = revision_chain()
    assert chain[0] == "0001" and chain[-1] == head_revision()
    assert current_revision(engine) is None
    open_database(settings).dispose()
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) == OUR_TABLES | {VERSION_TABLE}
    result = cli("db", "current", "--json")
    assert result.exit_code == 0 and '"up_to_date": true' in result.stdout


def test_upgrade_of_an_up_to_date_database_holding_data_changes_nothing(
    settings: Settings, engine: Engine, cli: Cli
) -> None:
    open_database(settings).dispose()
    fill_every_table(engine)
    before = table_state(engine)
    assert {name: count for name, (count, _digest) in before.items()} == dict.fromkeys(
        OUR_TABLES, ROWS_PER_TABLE
    )

    for _ in range(2):
        result = cli("db", "upgrade")
        assert result.exit_code == 0, result.output
        assert f"already at {head_revision()}" in result.stdout
    open_database(settings).dispose()  # the upgrade every command does on start
    upgrade_schema(engine)

    assert table_state(engine) == before
    assert current_revision(engine) == head_revision()


def test_every_revision_after_the_first_goes_down_and_up_keeping_every_row(
    settings: Settings, engine: Engine
) -> None:
    chain = revision_chain()
    if len(chain) == 1:
        pytest.skip("only the initial revision exists; its downgrade drops the schema by nature")
    open_database(settings).dispose()
    fill_every_table(engine)
    older_tables: dict[str, set[str]] = {}
    for older, newer in itertools.pairwise(chain):
        command.downgrade(alembic_config(engine), older)
        assert current_revision(engine) == older
        inspector = inspect(engine)
        older_tables[older] = set(inspector.get_table_names()) & OUR_TABLES
        kept = {
            name: [c["name"] for c in inspector.get_columns(name)]
            for name in inspector.get_table_names()
            if name in OUR_TABLES
        }
        upgrade_schema(engine, newer)
        newer_columns = {name: {c["name"] for c in inspect(engine).get_columns(name)} for name in kept}
        # A column a revision replaces (0002: direction_hit -> direction_score) is checked on its own.
        common = {name: [c for c in columns if c in newer_columns[name]] for name, columns in kept.items()}
        command.downgrade(alembic_config(engine), older)
        at_older = table_state(engine, common)
        upgrade_schema(engine, newer)
        assert table_state(engine, common) == at_older, f"rows changed going {older} -> {newer}"
    upgrade_schema(engine)
    # Tables a later revision created were dropped on the way down, so they come back empty.
    first = older_tables[chain[0]]
    assert {n: c for n, (c, _d) in table_state(engine).items()} == {
        name: ROWS_PER_TABLE if name in first else 0 for name in OUR_TABLES
    }


def test_first_upgrade_beside_other_tools_tables_keeps_their_rows_and_their_version(
    settings: Settings, engine: Engine, cli: Cli
) -> None:
    """Optuna and MLflow may share the database and keep their own `alembic_version` table: our
    migrations use `stockcli_alembic_version` and never touch theirs, up or down."""
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        )
        connection.execute(text("INSERT INTO alembic_version VALUES ('v3.2.0.a')"))
        connection.execute(
            text("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name VARCHAR(64))")
        )
        connection.execute(text("INSERT INTO studies VALUES (1, 'stockcli-ds-1'), (2, 'other')"))
    theirs = foreign_state(engine)

    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"from empty to {head_revision()}" in result.stdout
    assert set(inspect(engine).get_table_names()) == OUR_TABLES | {
        VERSION_TABLE,
        "alembic_version",
        "studies",
    }
    assert foreign_state(engine) == theirs

    fill_every_table(engine)
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) & OUR_TABLES == set()
    assert foreign_state(engine) == theirs
    open_database(settings).dispose()
    assert current_revision(engine) == head_revision() and foreign_state(engine) == theirs


def test_a_database_from_a_newer_stockcli_is_refused_and_left_untouched(
    settings: Settings, engine: Engine, cli: Cli
) -> None:
    open_database(settings).dispose()
    fill_every_table(engine)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    before = table_state(engine)

    for args in (("db", "upgrade"), ("--as-of", "2013-03-01", "fetch")):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "revision 9999, which this stockcli does not know" in result.stderr
        assert "upgrade stockcli" in result.stderr and "Traceback" not in result.stderr

    assert table_state(engine) == before  # no ledger row, no bar, no version change
    assert current_revision(engine) == "9999"


def test_table_state_notices_a_changed_value(settings: Settings, engine: Engine) -> None:
    """The checksum these cases rest on moves when a single stored value does."""
    open_database(settings).dispose()
    fill_every_table(engine)
    before = table_state(engine)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE raw_stock_data SET close = close + 1e-9 WHERE volume = 9000000000001")
        )
    after = table_state(engine)
    assert after["raw_stock_data"][0] == before["raw_stock_data"][0]
    assert after["raw_stock_data"][1] != before["raw_stock_data"][1]
    assert {k: v for k, v in after.items() if k != "raw_stock_data"} == {
        k: v for k, v in before.items() if k != "raw_stock_data"
    }
    assert hashlib.sha256(b"").hexdigest() not in {digest for _count, digest in after.values()}


def test_revision_0002_scores_existing_directions_as_the_metrics_module_does(
    settings: Settings, engine: Engine
) -> None:
    """direction_hit (a boolean that counted a flat forecast as a miss) becomes direction_score from
    the stored closes: 1 hit, 0 miss, 0.5 for a forecast of no change, NULL when the close did not
    move, exactly what `stockcli.ml.metrics.direction_scores` gives for the same closes."""
    from stockcli.ml.metrics import direction_scores

    upgrade_schema(engine, "0001")
    cases = [  # base, predicted, actual
        (100.0, 101.0, 102.0),
        (100.0, 99.0, 102.0),
        (100.0, 100.0, 102.0),
        (100.0, 101.0, 100.0),
    ]
    with engine.begin() as connection:
        for day, (base, predicted, actual) in enumerate(cases, start=1):
            connection.execute(
                text(
                    "INSERT INTO model_performance_log (target_date, ticker, model_version, base_date, "
                    "base_close, predicted_close, actual_close, abs_error, abs_pct_error, direction_hit, "
                    "naive_abs_error, evaluated_at) VALUES (:d, 'GOOG', '1', :d, :b, :p, :a, 0, 0, :hit, 0, :t)"
                ),
                {
                    "d": date(2013, 2, day),
                    "b": base,
                    "p": predicted,
                    "a": actual,
                    "hit": False,
                    "t": datetime(2013, 2, 1, tzinfo=UTC),
                },
            )
    upgrade_schema(engine)
    with engine.connect() as connection:
        stored = [
            row[0]
            for row in connection.execute(
                text("SELECT direction_score FROM model_performance_log ORDER BY target_date")
            )
        ]
    expected = direction_scores(
        predicted=np.array([c[1] for c in cases]),
        actual=np.array([c[2] for c in cases]),
        base=np.array([c[0] for c in cases]),
    )
    assert stored == [1.0, 0.0, 0.5, None]
    assert [None if np.isnan(v) else float(v) for v in expected] == stored


def test_revision_0005_renames_the_networks_interval_source(settings: Settings, engine: Engine) -> None:
    """The network's intervals were served under the name "model"; 0005 renames them "network" where
    a decision or an adaptive interval state names them, so a version promoted before still serves
    them (and keeps its state) rather than falling back to the rolling band."""
    upgrade_schema(engine, "0004")
    now = datetime(2013, 2, 1, tzinfo=UTC)
    with engine.begin() as connection:
        for ticker, source in (("GOOG", "model"), ("MSFT", "garch")):
            connection.execute(
                text(
                    "INSERT INTO serving_selection (model_version, ticker, point_source, interval_source, "
                    "n_sessions, decided_at) VALUES ('1', :t, 'naive', :s, 60, :now)"
                ),
                {"t": ticker, "s": source, "now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO interval_state (ticker, level, model_version, source, alpha, n_updates, "
                    "misses, updated_at) VALUES (:t, 80, '1', :s, 0.2, 3, 1, :now)"
                ),
                {"t": ticker, "s": source, "now": now},
            )
    upgrade_schema(engine)
    with engine.connect() as connection:
        chosen = dict(connection.execute(text("SELECT ticker, interval_source FROM serving_selection")).all())
        states = dict(connection.execute(text("SELECT ticker, source FROM interval_state")).all())
    assert chosen == {"GOOG": "network", "MSFT": "garch"} and states == chosen
