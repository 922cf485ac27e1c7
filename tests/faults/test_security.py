"""Fault class 5, security: planted pickles are never unpickled, the package cannot grow an unpickling
or look-ahead call, a database password never shows, and `serve` listens on loopback by default.

(The dashboard's hostile paths, hostile tickers and escaping are tested with the dashboard.)
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine, make_url

from stockcli.config import Settings, load_settings, redact_url
from stockcli.db import store
from stockcli.db.engine import make_engine, open_database
from stockcli.db.models import Base, PipelineRun
from stockcli.errors import ConfigError, RegistryError, StockCliError
from stockcli.ml.bundle import BUNDLE_FILE, WEIGHTS_FILE
from tests.conftest import Cli, write_config
from tests.faults.checks import crafted_payloads, table_state
from tests.model_helpers import build_dataset, fixture_spec, tiny_settings

PACKAGE = Path(__file__).resolve().parents[2] / "stockcli"
REPO = PACKAGE.parent
PASSWORD = "Pw-9f3Zq-never-shown"


# --- planted pickles in the database --------------------------------------------------------------------------


def array_columns() -> dict[str, list[str]]:
    """Every column of ours that holds array bytes (LargeBinary), by table."""
    from sqlalchemy import LargeBinary

    found: dict[str, list[str]] = {}
    for table in Base.metadata.sorted_tables:
        names = [c.name for c in table.columns if isinstance(c.type, LargeBinary)]
        if names:
            found[table.name] = names
    return found


def test_every_array_column_is_covered_below() -> None:
    assert array_columns() == {
        "processed_feature_data": [
            "dates_npy",
            "features_npy",
            "closes_npy",
            "target_price_npy",
            "target_return_npy",
            "mask_npy",
        ],
        "scaled_feature_sets": [
            "x_npy",
            "y_npy",
            "base_dates_npy",
            "target_dates_npy",
            "base_closes_npy",
            "target_closes_npy",
            "windows_npy",
            "context_npy",
        ],
    }


def test_bytes_to_array_reads_plain_npy_only(tmp_path: Path) -> None:
    sentinel = tmp_path / "unpickled"
    plain = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.testing.assert_array_equal(store.bytes_to_array(store.array_to_bytes(plain)), plain)
    archive = io.BytesIO()
    np.savez(archive, values=plain)  # a harmless .npz is still not what a column holds
    for name, blob in {**crafted_payloads(sentinel), "numeric .npz": archive.getvalue()}.items():
        with pytest.raises(StockCliError, match=r"not a plain \.npy array") as caught:
            store.bytes_to_array(blob, what=f"Column x_npy ({name})")
        assert f"({name})" in caught.value.message
    with pytest.raises(ValueError, match="allow_pickle=False"):  # and none is ever written
        store.array_to_bytes(np.array([object()], dtype=object))
    assert not sentinel.exists()


def test_crafted_pickle_in_every_array_column_is_never_unpickled(tmp_path: Path, database_url: str) -> None:
    from stockcli.db.datasets import load_built, load_dataset

    settings = tiny_settings(
        tmp_path / "data", data={"start": "2012-06-01"}, storage={"database_url": database_url}
    )
    engine = open_database(settings)
    try:
        run_id = build_dataset(settings, engine)
        before = table_state(engine)
        sentinel = tmp_path / "unpickled"
        loaders: dict[str, list[Callable[[Engine, str], Any]]] = {
            "processed_feature_data": [load_dataset],
            "scaled_feature_sets": [load_built],
        }
        tables = {t.name: t for t in Base.metadata.sorted_tables}
        planted = 0
        for table_name, columns in array_columns().items():
            table = tables[table_name]
            for column in columns:
                with engine.connect() as connection:
                    originals = connection.execute(
                        select(*table.primary_key.columns, table.c[column]).where(table.c.run_id == run_id)
                    ).all()
                assert originals, f"no {table_name} rows to plant into"
                for payload_name, payload in crafted_payloads(sentinel).items():
                    with engine.begin() as connection:
                        connection.execute(
                            update(table).where(table.c.run_id == run_id).values({column: payload})
                        )
                    for loader in loaders[table_name]:
                        with pytest.raises(StockCliError, match=r"not a plain \.npy array"):
                            loader(engine, run_id)
                    planted += 1
                    assert not sentinel.exists(), f"{payload_name} in {table_name}.{column} was unpickled"
                with engine.begin() as connection:
                    for *key, blob in originals:
                        condition = [c == v for c, v in zip(table.primary_key.columns, key, strict=True)]
                        connection.execute(update(table).where(*condition).values({column: blob}))
        assert planted == 14 * 3
        assert table_state(engine) == before  # restored: nothing else was touched
        assert load_dataset(engine, run_id).run_id == run_id and load_built(engine, run_id).run_id == run_id
    finally:
        engine.dispose()


# --- a planted pickle as the weights of a registered model version ---------------------------------------------


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str, Path]]:
    """One real tiny version in a real MLflow store: (settings, version, its local artifact folder)."""
    from stockcli.ml import registry
    from stockcli.ml.networks import model_config
    from tests.model_helpers import build_model

    data_dir = tmp_path_factory.mktemp("security-registry") / "data"
    settings = load_settings(
        None,
        environ={},
        overrides={
            "storage": {"data_dir": str(data_dir)},
            "mlflow": {"model_name": f"sec-{uuid.uuid4().hex[:8]}"},
        },
    )
    registry.clear_caches()
    sizes = {
        "n_features": 2,
        "n_own_features": 2,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
    }
    model = build_model("lstm", **sizes).eval()
    with registry.training_run(settings, run_name="security") as run:
        version = registry.register_version(
            settings,
            run,
            model=model,
            model_config=model_config("lstm", **sizes),
            spec=fixture_spec(),
            scalers={},
            tickers=["AAA", "BBB"],
            sequence_length=5,
            target_kind="return",
            dataset_run_id="ds-security",
        )
    folder = Path(unquote(urlparse(run.artifact_uri).path)) / registry.MODEL_ARTIFACT_PATH
    assert (folder / WEIGHTS_FILE).is_file()
    registry.set_production(settings, version)
    yield settings, version, folder
    registry.clear_caches()


def _torch_zip(sentinel: Path) -> bytes:
    import torch

    from tests.faults.checks import _Planted

    buffer = io.BytesIO()
    torch.save({"weights": _Planted(sentinel)}, buffer)  # torch's format: a zip holding data.pkl
    return buffer.getvalue()


def _plain_npy(_sentinel: Path) -> bytes:
    return store.array_to_bytes(np.zeros(3))


WEIGHT_PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    **{
        name: (lambda s, n=name: crafted_payloads(s)[n])
        for name in ("bare pickle", "object .npy", "object array in .npz")
    },
    "torch.save zip": _torch_zip,
    "plain .npy, not .npz": _plain_npy,
}


@pytest.mark.parametrize(
    ("payload", "checksum"),
    [
        pytest.param(
            name,
            checksum,
        )
        for name in WEIGHT_PAYLOADS
        for checksum in ("stale checksum", "forged checksum")
    ],
)
def test_pickle_as_the_weights_of_a_registered_version_is_refused(
    registered: tuple[Settings, str, Path], tmp_path: Path, payload: str, checksum: str
) -> None:
    """Whoever can write the artifact store can also rewrite bundle.json's checksum: the registry
    refuses the changed bundle (its whole-bundle checksum was recorded at registration), and the
    loader itself refuses the file even when asked to read the folder without that checksum."""
    from stockcli.ml import registry
    from stockcli.ml.bundle import read_bundle

    settings, version, folder = registered
    sentinel = tmp_path / "unpickled"
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)
    blob = WEIGHT_PAYLOADS[payload](sentinel)
    try:
        (folder / WEIGHTS_FILE).write_bytes(blob)
        if checksum == "forged checksum":
            bundle = json.loads((folder / BUNDLE_FILE).read_text())
            bundle["weights_sha256"] = hashlib.sha256(blob).hexdigest()
            (folder / BUNDLE_FILE).write_text(json.dumps(bundle))
        registry.clear_caches()
        with pytest.raises(RegistryError, match=f"version {version}"):
            registry.load_bundle(settings)  # through the Production alias, as `predict` does
        assert not sentinel.exists()
        with pytest.raises(RegistryError, match="weights"):
            read_bundle(folder, version=version)  # no recorded checksum to compare with
        assert not sentinel.exists()
    finally:
        shutil.rmtree(folder)
        shutil.copytree(saved, folder)
        registry.clear_caches()
    assert not sentinel.exists()
    assert registry.load_bundle(settings, version=version).version == version  # restored, loadable


# --- a static check of the package -------------------------------------------------------------------------------

UNPICKLERS = {
    f"{module}.{name}"
    for module in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
    for name in ("load", "loads", "Unpickler")
} | {
    "joblib.load",
    "pandas.read_pickle",
    "shelve.open",
    "marshal.load",
    "marshal.loads",
    "mlflow.pytorch.load_model",  # unpickles unless the model was logged in the pt2 format
    "mlflow.pyfunc.load_model",
    "mlflow.sklearn.load_model",
}
BACKWARD_FILLS = {"bfill", "backfill", "interpolate"}  # each fills a gap from values after it


def _aliases(tree: ast.AST) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def forbidden_calls(source: str, filename: str = "<snippet>") -> list[str]:
    """`file:line: what` for each call that could unpickle or fill backwards."""
    tree = ast.parse(source, filename=filename)
    aliases = _aliases(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func)
        if dotted is None:
            method = node.func.attr if isinstance(node.func, ast.Attribute) else None
        else:
            head, _, rest = dotted.partition(".")
            full = aliases.get(head, head) + (f".{rest}" if rest else "")
            method = dotted.rsplit(".", 1)[-1]
            full = full.replace("numpy.lib.npyio.", "numpy.")
            if full in UNPICKLERS or full.endswith(".read_pickle"):
                found.append(f"{filename}:{node.lineno}: {full}")
            if full == "numpy.load" and not (
                isinstance(_keyword(node, "allow_pickle"), ast.Constant | type(None))
                and not _is_true(_keyword(node, "allow_pickle"))
            ):
                found.append(f"{filename}:{node.lineno}: numpy.load without allow_pickle=False")
            if full == "torch.load" and not _is_true(_keyword(node, "weights_only")):
                found.append(f"{filename}:{node.lineno}: torch.load without weights_only=True")
        if method in BACKWARD_FILLS and isinstance(node.func, ast.Attribute):
            found.append(f"{filename}:{node.lineno}: .{method}() fills from the future")
        fill_method = _keyword(node, "method")
        if isinstance(fill_method, ast.Constant) and fill_method.value in ("bfill", "backfill"):
            found.append(f"{filename}:{node.lineno}: method={fill_method.value!r} fills from the future")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.loads(b'')",
        "import pickle as p\np.load(open('f', 'rb'))",
        "from pickle import loads\nloads(b'')",
        "import joblib\njoblib.load('m.joblib')",
        "import pandas as pd\npd.read_pickle('f')",
        "import numpy as np\nnp.load('f', allow_pickle=True)",
        "import numpy\nnumpy.load('f', allow_pickle=flag)",
        "from numpy import load\nload('f', allow_pickle=True)",
        "import torch\ntorch.load('w.pt')",
        "import torch\ntorch.load('w.pt', weights_only=False)",
        "import mlflow\nmlflow.pytorch.load_model('models:/m/1')",
        "frame = frame.bfill()",
        "frame.fillna(method='bfill')",
        "frame.reindex(index, method='backfill')",
        "series.interpolate()",
    ],
)
def test_the_static_check_finds_each_forbidden_call(snippet: str) -> None:
    assert forbidden_calls(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "import numpy as np\nnp.load('f', allow_pickle=False)",
        "import numpy as np\nnp.load('f')",
        "import torch\ntorch.load('w.pt', weights_only=True)",
        "import pickle\npickle.dumps(1)",
        "frame.ffill(limit=1)",
        "frame.fillna(0.0)",
    ],
)
def test_the_static_check_allows_the_safe_forms(snippet: str) -> None:
    assert forbidden_calls(snippet) == []


def test_the_package_never_unpickles_nor_fills_backwards() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30
    found = [
        hit
        for path in files
        for hit in forbidden_calls(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert found == []


# --- a database password never shows ---------------------------------------------------------------------------


@pytest.fixture
def secret_pg_url(postgres_url: str) -> str:
    """The test PostgreSQL URL with a password: trust authentication accepts any."""
    return (
        make_url(postgres_url)
        .set(username="postgres", password=PASSWORD)
        .render_as_string(hide_password=False)
    )


def _stockcli(config: Path, env_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
    env.update(STOCKCLI_CONFIG=str(config), STOCKCLI_DATABASE_URL=env_url)
    return subprocess.run(
        [sys.executable, "-m", "stockcli", "--verbose", *args],
        env=env,
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.postgres
def test_database_password_never_appears_in_output_logs_or_the_ledger(
    tmp_path: Path, secret_pg_url: str
) -> None:
    assert PASSWORD in secret_pg_url
    config = write_config(tmp_path, extra="[data]\nstart = 2013-01-02\n")
    # A real process with --verbose: debug logs of SQLAlchemy, Alembic and ours, and tracebacks, on stderr.
    partial = _stockcli(
        config, secret_pg_url, "--as-of", "2013-03-01", "fetch", "-t", "GOOG", "-t", "AAPL", "--json"
    )
    assert partial.returncode == 3, partial.stderr
    assert "DEBUG" in partial.stderr and "AAPL" in partial.stderr
    unreachable = make_url(secret_pg_url).set(port=1).render_as_string(hide_password=False)
    down = _stockcli(config, unreachable, "--as-of", "2013-03-01", "fetch")
    assert down.returncode == 1 and "Cannot reach the database" in down.stderr
    assert "Traceback" in down.stderr
    outputs = [partial.stdout, partial.stderr, down.stdout, down.stderr]

    cli = Cli(config)
    for args in (
        ("db", "current", "--json"),
        ("db", "upgrade"),
        ("--as-of", "2013-03-01", "fetch", "-t", "^XX"),
    ):
        result = cli("--verbose", *args, env={"STOCKCLI_DATABASE_URL": secret_pg_url})
        outputs += [result.stdout, result.stderr]
        assert result.exit_code in (0, 4), result.output
    assert "postgres:***@" in "".join(outputs)  # the URL is shown, its password hidden

    engine = make_engine(secret_pg_url)
    try:
        with engine.connect() as connection:
            runs = connection.execute(select(PipelineRun.error, PipelineRun.details)).all()
    finally:
        engine.dispose()
    assert any(error and "AAPL" in error for error, _details in runs)
    ledger = [json.dumps([error, details], default=str) for error, details in runs]
    for text in outputs + ledger:
        assert PASSWORD not in text


@pytest.mark.postgres
def test_database_password_never_appears_on_the_dashboard_or_its_error_pages(
    tmp_path: Path, secret_pg_url: str
) -> None:
    from fastapi.testclient import TestClient

    from stockcli.web.app import create_app

    unreachable = make_url(secret_pg_url).set(port=1).render_as_string(hide_password=False)
    pages: list[str] = []
    for url in (secret_pg_url, unreachable):  # no tables yet; no server at all
        settings = load_settings(
            None, environ={}, overrides={"storage": {"data_dir": str(tmp_path / "data"), "database_url": url}}
        )
        with TestClient(create_app(settings, warm_registry=False)) as client:
            for path, headers in (
                ("/", {"accept": "text/html"}),
                ("/predictions/latest_for_table", {"accept": "application/json"}),
                ("/tickers", {"accept": "text/html"}),
                ("/health", {}),
            ):
                response = client.get(path, headers=headers)
                pages.append(response.text)
                if path in ("/predictions/latest_for_table", "/tickers"):
                    assert response.status_code == 503, (url, path, response.text)
    assert any("postgres:***@" in page for page in pages)
    for page in pages:
        assert PASSWORD not in page


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://stock:{PASSWORD}@db.example:5432/stockcli",
        f"postgresql+psycopg://:{PASSWORD}@db.example/stockcli",
        f"postgresql+psycopg://stock@db.example/stockcli?sslmode=require&password={PASSWORD}",
        f"host=db.example user=stock password={PASSWORD} dbname=stockcli",
    ],
)
def test_settings_repr_and_redacted_urls_hide_the_password(url: str) -> None:
    overrides = {
        "storage": {"database_url": url},
        "mlflow": {"tracking_uri": url},
        "tuning": {"storage_url": url},
    }
    if url.startswith("host="):  # not a URL: refused when the configuration loads, the password hidden
        with pytest.raises(ConfigError) as caught:
            load_settings(None, environ={}, overrides=overrides)
        assert PASSWORD not in str(caught.value) and "password=***" in str(caught.value)
    else:
        settings = load_settings(None, environ={}, overrides=overrides)
        assert PASSWORD not in repr(settings)  # tracebacks with locals, debug logs, test failures
    assert PASSWORD not in redact_url(url)
    assert "db.example" in redact_url(url)  # still says where


# --- serve listens on loopback unless told otherwise ---------------------------------------------------------------


def test_serve_binds_to_loopback_by_default() -> None:
    import typer

    from stockcli.cli.app import app

    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    host = next(p for p in command.params if p.name == "host")
    assert host.default == "127.0.0.1"
    result = Cli(Path("/nonexistent/config.toml"))("serve", "--help")
    assert result.exit_code == 0 and "127.0.0.1" in result.stdout
