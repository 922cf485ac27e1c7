"""Fault class: what a CSV folder can leak (issue 19, finding 3). A symlink that leaves `csv_dir`
(`GOOG.csv -> /etc/shadow`) is never followed, and no error quotes a file's text (it names the file,
line and column): a secret line appears nowhere, not in stdout, stderr, the run ledger or `report`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from stockcli.config import load_settings
from stockcli.db.engine import make_engine
from stockcli.db.models import PipelineRun
from stockcli.sources.sample import SAMPLE_DIR
from tests.conftest import Cli, write_config

SECRET = "root:$y$j9T$s3cretHASHvalue:19000:0:99999:7:::"
PIECES = ("s3cret", "HASH", "j9T", "99999")


def leaks(*texts: str) -> list[str]:
    return [piece for text in texts for piece in PIECES if piece in text]


def ledger_text(cli: Cli) -> str:
    engine = make_engine(load_settings(cli.config_path, environ={}).database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(PipelineRun.status, PipelineRun.error, PipelineRun.details)
            ).all()
    finally:
        engine.dispose()
    assert rows, "the fetch left no ledger row"
    return repr(rows)


@pytest.mark.parametrize(
    "planted",
    [
        "symlink out",  # GOOG.csv -> a root-readable file elsewhere
        "secret header",  # a file in the folder whose first line is the secret
        "secret date",  # ... in the Date column
        "secret price",  # ... in a price column
    ],
)
def test_a_secret_in_or_behind_a_csv_shows_nowhere(tmp_path: Path, database_url: str, planted: str) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    shutil.copy(SAMPLE_DIR / "MSFT.csv", folder / "MSFT.csv")
    header = "Date,Open,High,Low,Close,Volume\n"
    if planted == "symlink out":
        shadow = tmp_path / "etc" / "shadow"
        shadow.parent.mkdir()
        shadow.write_text(SECRET + "\ndaemon:*:19000:0:99999:7:::\n")
        (folder / "GOOG.csv").symlink_to(shadow)
    else:
        text = {
            "secret header": f"{SECRET}\n2013-02-01,1,1,1,1,1\n",
            "secret date": f"{header}2013-02-01,10,11,9,10.5,1\n{SECRET},10,11,9,10.5,1\n",
            "secret price": f"{header}2013-02-01,10,11,9,{SECRET},1\n",
        }[planted]
        (folder / "GOOG.csv").write_text(text)
    cli = Cli(
        write_config(tmp_path, database_url, extra='[data]\nstart = 2013-01-02\ntickers = ["GOOG", "MSFT"]\n')
    )
    fetched = cli("--as-of", "2013-03-01", "--json", "fetch", "--csv-dir", str(folder))
    assert fetched.exit_code == 3, fetched.output  # GOOG failed, MSFT saved
    goog = json.loads(fetched.stdout)["tickers"]["GOOG"]
    assert goog["status"] == "failed"
    if planted == "symlink out":
        assert "outside the CSV folder" in goog["error"] and "does not follow it" in goog["error"]
    else:
        assert "GOOG.csv line " in goog["error"]
    shown = cli("report")
    shown_json = cli("report", "--json")
    assert shown.exit_code == 0 and shown_json.exit_code == 0, shown.output
    assert not leaks(fetched.output, shown.output, shown_json.output, ledger_text(cli))


def test_a_symlink_inside_the_folder_is_still_read(tmp_path: Path) -> None:
    folder = tmp_path / "bars"
    (folder / "files").mkdir(parents=True)
    shutil.copy(SAMPLE_DIR / "MSFT.csv", folder / "files" / "msft-2013.csv")
    (folder / "MSFT.csv").symlink_to(folder / "files" / "msft-2013.csv")
    cli = Cli(write_config(tmp_path, extra='[data]\nstart = 2013-01-02\ntickers = ["MSFT"]\n'))
    result = cli("--as-of", "2013-03-01", "fetch", "--csv-dir", str(folder))
    assert result.exit_code == 0, result.output
