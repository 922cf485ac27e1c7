"""`stockcli db upgrade` and `stockcli db current`: the app database's schema revision (Alembic)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stockcli.config import Settings, redact_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class SchemaUpgrade:
    database: str  # the URL, password hidden
    before: str | None  # the revision found (None: an empty database)
    after: str | None
    head: str | None  # the newest revision this stockcli knows


@dataclass(frozen=True)
class SchemaStatus:
    database: str  # the URL, password hidden
    current: str | None  # None: no stockcli tables yet
    head: str | None
    known: bool  # `current` is one of this stockcli's revisions (else a newer stockcli wrote it)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[Engine]:
    """The app's engine, never migrated on opening, its driver errors made clear; disposed after."""
    from stockcli.db.engine import database_errors, open_database

    engine = open_database(settings, upgrade=False)
    try:
        with database_errors(settings):
            yield engine
    finally:
        engine.dispose()


def upgrade(settings: Settings) -> SchemaUpgrade:
    """Bring the schema up to the newest revision. Raises StockCliError when the database cannot be
    reached, or was migrated by a newer stockcli (exit 2)."""
    from stockcli.db.engine import current_revision, head_revision, upgrade_schema

    with _database(settings) as engine:
        before = current_revision(engine)
        upgrade_schema(engine)
        after = current_revision(engine)
    return SchemaUpgrade(redact_url(settings.database_url), before, after, head_revision())


def status(settings: Settings) -> SchemaStatus:
    """The database's revision next to the newest one this stockcli knows; changes nothing."""
    from stockcli.db.engine import current_revision, head_revision, known_revision

    with _database(settings) as engine:
        revision = current_revision(engine)
    known = revision is None or known_revision(revision)
    return SchemaStatus(redact_url(settings.database_url), revision, head_revision(), known)
