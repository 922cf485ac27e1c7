"""Fault class: secrets in URLs. A password in the database URL, the MLflow tracking URI or the Optuna
storage URL never reaches the output, `--verbose` logs and tracebacks, the run ledger or an exception's
text, including passwords with a raw `@` or `:` that defeat URL parsing. Nothing is changed by the
failed runs (table checksums before and after)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from stockcli import redact
from stockcli.config import load_settings
from stockcli.db.engine import open_database
from stockcli.db.models import PipelineRun
from stockcli.errors import StockCliError
from tests.conftest import write_config
from tests.faults.checks import table_state
from tests.faults.test_registry_faults import closed_port

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "p@ss:w0rd"  # a raw @ and : : SQLAlchemy and urllib both split it in the wrong place
PIECES = ("p@ss", "ss:w0rd", "w0rd", "s3cret")


def leaks(*texts: str) -> list[str]:
    return [piece for text in texts for piece in PIECES if piece in text]


def stockcli(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
    full.update(STOCKCLI_CONFIG=str(config), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0", COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "stockcli", *args],
        env=full,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (
            f"postgresql+psycopg://postgres:{HOSTILE}@127.0.0.1/x",
            "postgresql+psycopg://postgres:***@127.0.0.1/x",
        ),
        (f"postgresql://:{HOSTILE}@db.example:5432/x", "postgresql://:***@db.example:5432/x"),
        ("http://user:s3cret@127.0.0.1:9/", "http://user:***@127.0.0.1:9/"),
        ("https://user:s3cret@mlflow.example/api/2.0/x", "https://user:***@mlflow.example/api/2.0/x"),
        (
            f"API request to http://user:{HOSTILE}@127.0.0.1:9/api failed; retry http://u:s3cret@h/",
            "API request to http://user:***@127.0.0.1:9/api failed; retry http://u:***@h/",
        ),
        (
            "postgresql://u@h/x?sslmode=require&password=s3cret",
            "postgresql://u@h/x?sslmode=require&password=***",
        ),
        ("host=h user=u password='s3cret w0rd' dbname=x", "host=h user=u password=*** dbname=x"),
        ("sqlite:////tmp/p@ss/x.db", "sqlite:////tmp/p@ss/x.db"),  # no password: a path is kept as is
    ],
)
def test_redact_url_hides_every_form_of_password_and_keeps_where(text: str, kept: str) -> None:
    assert redact.redact_url(text) == kept


def test_config_keeps_the_one_redact_url_and_errors_redact_their_text() -> None:
    from stockcli import config

    assert config.redact_url is redact.redact_url
    error = StockCliError(f"Cannot reach postgresql://u:{HOSTILE}@h/x", hint="see http://a:s3cret@b/")
    assert not leaks(str(error), error.message, repr(error.args))


def test_every_log_record_is_redacted_whoever_logs_it() -> None:
    redact.install_log_redaction()
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger = logging.getLogger("mlflow.tests.secrets")  # a library's logger with its own handler
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("retrying %s", f"http://user:{HOSTILE}@127.0.0.1:9/api")
        try:
            raise RuntimeError("API request to http://user:s3cret@127.0.0.1:9/ failed")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2 and "Traceback" in records[1]
    assert "http://user:***@127.0.0.1:9/api" in records[0]
    assert not leaks(*records)


def test_tracking_uri_password_is_never_printed_even_with_verbose(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    uri = f"http://user:s3cret@127.0.0.1:{closed_port()}/"
    plain = stockcli(config, "models", env={"STOCKCLI_MLFLOW_TRACKING_URI": uri})
    verbose = stockcli(config, "--verbose", "models", env={"STOCKCLI_MLFLOW_TRACKING_URI": uri})
    for result in (plain, verbose):
        assert result.returncode == 1, result.stderr
        assert "http://user:***@127.0.0.1" in result.stderr
    assert "Traceback" in verbose.stderr and "MlflowException" in verbose.stderr
    assert not leaks(plain.stdout, plain.stderr, verbose.stdout, verbose.stderr)


def test_tracking_uri_password_never_reaches_the_ledger(tmp_path: Path, database_url: str) -> None:
    config = write_config(tmp_path, database_url)
    engine = open_database(load_settings(config, environ={}))
    try:
        before = table_state(engine)
        uri = f"http://user:s3cret@127.0.0.1:{closed_port()}/"
        result = stockcli(
            config, "--verbose", "--as-of", "2013-03-01", "predict", env={"STOCKCLI_MLFLOW_TRACKING_URI": uri}
        )
        assert result.returncode == 1, result.stderr
        with engine.connect() as connection:
            rows = connection.execute(select(PipelineRun.status, PipelineRun.error)).all()
        after = table_state(engine)
    finally:
        engine.dispose()
    assert [status for status, _ in rows] == ["failed"]
    assert "user:***@127.0.0.1" in str(rows[0][1])
    assert not leaks(result.stdout, result.stderr, *(str(error) for _, error in rows))
    assert {k: v for k, v in after.items() if k != "pipeline_runs"} == {
        k: v for k, v in before.items() if k != "pipeline_runs"
    }


@pytest.mark.parametrize("variable", ["STOCKCLI_DATABASE_URL", "STOCKCLI_MLFLOW_TRACKING_URI"])
def test_a_password_that_defeats_url_parsing_is_refused_without_showing_it(
    tmp_path: Path, variable: str
) -> None:
    config = write_config(tmp_path)
    url = f"postgresql+psycopg://postgres:{HOSTILE}@127.0.0.1/x"
    result = stockcli(config, "--verbose", "--as-of", "2013-03-01", "predict", env={variable: url})
    assert result.returncode == 2, result.stderr
    assert "postgresql+psycopg://postgres:***@127.0.0.1/x" in result.stderr
    assert "percent-encoded" in result.stderr
    assert not leaks(result.stdout, result.stderr)


def test_optuna_storage_password_never_shows(tmp_path: Path) -> None:
    from stockcli.ml import tuning

    for url in (
        f"postgresql+psycopg://postgres:{HOSTILE}@127.0.0.1/x",  # unparsable
        f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{closed_port()}/x",  # no server
    ):
        with pytest.raises(StockCliError) as caught:
            tuning.make_storage(url, data_dir=tmp_path)
        assert "postgres:***@127.0.0.1" in str(caught.value)
        assert not leaks(str(caught.value), repr(caught.value.args))


@pytest.mark.postgres
def test_a_percent_encoded_hostile_password_works_and_never_shows(tmp_path: Path, postgres_url: str) -> None:
    """The same password percent-encoded is a valid URL (trust authentication accepts any password):
    a real fetch on PostgreSQL with --verbose logs, then the ledger, show it nowhere."""
    url = (
        make_url(postgres_url)
        .set(username="postgres", password=HOSTILE)
        .render_as_string(hide_password=False)
    )
    assert "p%40ss%3Aw0rd" in url
    config = write_config(tmp_path, extra="[data]\nstart = 2013-02-01\n")
    result = stockcli(
        config,
        "--verbose",
        "--as-of",
        "2013-03-01",
        "fetch",
        "-t",
        "GOOG",
        env={"STOCKCLI_DATABASE_URL": url},
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr
    engine = open_database(load_settings(config, environ={"STOCKCLI_DATABASE_URL": url}))
    try:
        with engine.connect() as connection:
            ledger = connection.execute(
                select(PipelineRun.status, PipelineRun.error, PipelineRun.details)
            ).all()
        bars = table_state(engine)["raw_stock_data"][0]
    finally:
        engine.dispose()
    assert [row[0] for row in ledger] == ["ok"] and bars > 10
    assert not leaks(result.stdout, result.stderr.replace("p%40ss%3Aw0rd", "?"), str(ledger))
    assert "p%40ss%3Aw0rd" not in result.stdout + result.stderr
