"""Fault class: a running dashboard's `/health` (issue 19, finding 9). Every call reads the database
(cheaply, on a fresh connection), so a database corrupted or made unreadable while the server runs
answers 503 at once, as the data endpoints do; `HEAD /health` answers like GET, without a body."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from stockcli.config import Settings
from stockcli.web.app import create_app
from tests import report_data

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def _corrupt_sqlite(settings: Settings) -> Callable[[], None]:
    """Overwrite the database file in place (same inode, same size) with bytes that are no database."""
    path = settings.data_dir / "stockcli.db"

    def corrupt() -> None:  # (its -shm file is mapped in memory: left alone, as a disk fault would)
        path.write_bytes(b"\xde\xad\xbe\xef" * (path.stat().st_size // 4))

    return corrupt


def _postgres_reader(settings: Settings, url: str) -> tuple[Settings, Callable[[], None], Callable[[], None]]:
    """Settings that read as a role of their own, a function that revokes its right to read the
    tables while the server runs, and the clean-up."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    parsed = make_url(url)
    schema = str(parsed.query["options"]).split("=", 1)[1]
    admin = url.split("?", 1)[0].replace("postgresql+psycopg", "postgresql")

    def sql(*statements: str) -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]

    sql(
        f"CREATE ROLE {role} LOGIN",
        f'GRANT USAGE ON SCHEMA "{schema}" TO {role}',
        f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}',
    )
    reader_url = parsed.set(username=role).render_as_string(hide_password=False)
    revoke = lambda: sql(f'REVOKE SELECT ON ALL TABLES IN SCHEMA "{schema}" FROM {role}')  # noqa: E731
    cleanup = lambda: sql(f"DROP OWNED BY {role}", f"DROP ROLE {role}")  # noqa: E731
    return settings.replace(storage={"database_url": reader_url}), revoke, cleanup


def test_health_sees_a_database_spoiled_while_the_server_runs(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url)
    report_data.fill(settings).engine.dispose()
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if database_url.startswith("sqlite"):
        spoil = _corrupt_sqlite(settings)
    else:
        settings, spoil, cleanup = _postgres_reader(settings, database_url)
    try:
        with TestClient(create_app(settings, warm_registry=False)) as client:
            answers: list[Any] = [client.get("/health"), client.head("/health"), client.get("/tickers")]
            assert [a.status_code for a in answers] == [200, 200, 200], answers[0].text
            assert answers[0].json()["status"] == "ok" and answers[1].content == b""
            spoil()
            health, head = client.get("/health"), client.head("/health")
            assert health.status_code == 503 and health.json()["status"] == "unavailable", health.text
            assert head.status_code == 503 and head.content == b""
            assert "Traceback" not in health.text
    finally:
        cleanup()


def test_head_health_on_a_fresh_install(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(), warm_registry=False)) as client:
        head = client.head("/health")
        assert head.status_code == 200 and head.content == b""
        assert client.get("/health").json()["status"] == "empty"
