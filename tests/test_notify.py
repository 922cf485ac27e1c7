"""Being told: real messages to real local receivers through Apprise.

An SMTP server (aiosmtpd) on 127.0.0.1 receives the failure mail of a command (`mailto://`), a local
HTTP server receives the JSON webhooks (`json://`) of a retrain, a promotion and a band break found by
the real monitor; with the receiver down, the run exits with its own code and the ledger keeps the
delivery warning. A token in a notification URL never shows: not on stdout or stderr, not in
`--verbose` logs, not in the ledger, not in `report`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from stockcli import notify
from stockcli.choices import NOTIFY_EVENTS
from stockcli.config import load_settings
from stockcli.db.engine import open_database
from stockcli.db.models import LatestPrediction, PipelineRun
from stockcli.errors import ConfigError
from stockcli.services.daily import DailyResult
from stockcli.services.monitor import EMPTY, BandBreak, MonitorResult, monitor
from stockcli.services.predict import FailedTicker, Prediction
from stockcli.services.retrain import RetrainResult
from tests.conftest import Cli, write_config

REPO = Path(__file__).resolve().parents[1]
TOKEN = "T0k3n-s3cr3t-9f8e7d"  # a webhook's password
PATH_TOKEN = "hooks-Zq81xw77Lk"  # a token in a webhook's path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Mailbox:
    port: int
    mails: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"

    def url(self) -> str:
        return (
            f"mailto://127.0.0.1:{self.port}?smtp=127.0.0.1&mode=insecure"
            "&from=stockcli@example.com&to=ops@example.com"
        )


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox(free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class Webhook:
    port: int
    posts: list[dict[str, Any]] = field(default_factory=list)

    def url(self) -> str:
        return f"json://hook:{TOKEN}@127.0.0.1:{self.port}/{PATH_TOKEN}"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook.posts.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def notify_toml(*urls: str, events: str = "") -> str:
    listed = ", ".join(json.dumps(url) for url in urls)
    return f"[notify]\nurls = [{listed}]\ntimeout_s = 2\n" + (f"events = {events}\n" if events else "")


def ledger(config: Path) -> list[tuple[str, str | None, list[str] | None]]:
    engine = open_database(load_settings(config, environ={}))
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(PipelineRun.command, PipelineRun.status, PipelineRun.warnings))
            return [(command, status, warnings) for command, status, warnings in rows]
    finally:
        engine.dispose()


# --- messages from typed results ---------------------------------------------------------------------


def daily_result(**changes: Any) -> DailyResult:
    prediction = Prediction(
        ticker="GOOG",
        base_date=date(2013, 2, 28),
        base_close=801.2,
        predicted_close=803.0,
        target_date=date(2013, 3, 1),
        model_version="7",
        dataset_run_id="ds",
        lower_95=780.0,
        upper_95=826.0,
        p_up=0.53,
    )
    values: dict[str, Any] = {
        "status": "partial",
        "as_of": date(2013, 2, 28),
        "model_version": "7",
        "predictions": (prediction,),
        "monitor": None,
        "retrained": False,
        "promoted": False,
        "fetch": None,
        "retrain": None,
        "bootstrapped": False,
        "messages": (),
        "failed": (FailedTicker("MSFT", "no bar since 2013-02-20", "stale"),),
    }
    return DailyResult(**{**values, **changes})


def test_a_daily_run_tells_its_band_breaks_retrain_promotion_and_summary_by_webhook(
    make_settings: Any, webhook: Webhook
) -> None:
    retrained = RetrainResult(
        ran=True,
        reason="Monitor: the 95% interval covered 70.0% of 40 closes (binomial p = 0.0004 < 0.01)",
        model_version="8",
        promoted=True,
        promotion_reason="Candidate better than Production on 60 sessions",
        promotion={"p_value": 0.0123},
    )
    breaks = (
        BandBreak("MSFT", date(2013, 2, 28), 25.1, 27.0, 28.4, "7"),
        BandBreak("GOOG", date(2013, 2, 28), 830.5, 780.0, 826.0, "7"),
    )
    watched = MonitorResult(date(2013, 2, 28), "7", 2, 0, EMPTY, band_breaks=breaks)
    result = daily_result(monitor=watched, retrain=retrained, retrained=True, promoted=True)
    settings = make_settings(notify={"urls": [webhook.url()], "events": list(NOTIFY_EVENTS)})

    assert notify.send(settings.notify, notify.daily_messages(result)) == []

    titles = [post["title"] for post in webhook.posts]
    assert titles == [
        "stockcli: 2 closes outside the 95% band (GOOG, MSFT)",
        "stockcli retrained: version 8 promoted to Production",
        "stockcli: version 8 is now Production",
        "stockcli daily 2013-02-28: partial, for 2013-03-01",
    ]
    band, retrain, promotion, summary = (post["message"] for post in webhook.posts)
    assert "MSFT 2013-02-28: close 25.10 below 27.00–28.40" in band
    assert "GOOG 2013-02-28: close 830.50 above 780.00–826.00" in band
    assert "covered 70.0% of 40 closes" in retrain and "p-value: 0.0123" in retrain
    assert "Candidate better than Production" in promotion and "p-value: 0.0123" in promotion
    assert "GOOG 801.20 → 803.00 (+0.22%) 95% 780.00–826.00 P(up) 53%" in summary
    assert "MSFT: no prediction (no bar since 2013-02-20)" in summary
    assert all(post["path"] == f"/{PATH_TOKEN}" for post in webhook.posts)


def test_only_the_chosen_events_are_sent(make_settings: Any, webhook: Webhook) -> None:
    not_promoted = RetrainResult(ran=True, reason="Forced with --force.", model_version="9", promotion={})
    settings = make_settings(notify={"urls": [webhook.url()], "events": ["promotion"]})
    notify.send(settings.notify, notify.retrain_messages(not_promoted, as_of=date(2013, 3, 1)))
    notify.send(settings.notify, notify.daily_messages(daily_result()))  # summary: not chosen
    assert webhook.posts == []
    settings = make_settings(notify={"urls": [webhook.url()], "events": ["retrain"]})
    notify.send(settings.notify, notify.retrain_messages(not_promoted, as_of=date(2013, 3, 1)))
    assert [post["title"] for post in webhook.posts] == ["stockcli retrained: version 9 not promoted"]
    assert (
        notify.retrain_messages(RetrainResult(ran=False, reason="Not needed."), as_of=date(2013, 3, 1)) == []
    )


def test_the_monitor_finds_the_closes_outside_their_band_and_the_webhook_gets_one_message(
    make_settings: Any, database_url: str, webhook: Webhook
) -> None:
    from tests.test_monitor import TICKERS, market, off_by
    from tests.test_monitor import store as store_predictions

    settings = make_settings(database_url, notify={"urls": [webhook.url()]})
    engine = open_database(settings)
    world = market(8)
    try:
        # 30% above the base close on session 5: far outside its band, for both tickers.
        store_predictions(engine, world, off_by(1.30, {5}), width=0.05)
        result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1])
        again = monitor(settings=settings, engine=engine, as_of=world.sessions[-1])
    finally:
        engine.dispose()
    assert [(b.ticker, b.target_date) for b in result.band_breaks] == [
        (t, world.sessions[5]) for t in TICKERS
    ]
    assert all(b.actual_close < b.lower_95 for b in result.band_breaks)
    assert again.band_breaks == ()  # scored once, told once
    message = notify.band_break_message(result.band_breaks)
    assert message is not None
    assert notify.send(settings.notify, [message]) == []
    assert len(webhook.posts) == 1 and "2 closes outside the 95% band (AAA, BBB)" in webhook.posts[0]["title"]


# --- failures, end to end ------------------------------------------------------------------------------


def test_a_failed_command_mails_its_exit_code_error_and_hint(tmp_path: Path, mailbox: Mailbox) -> None:
    cli = Cli(write_config(tmp_path, extra=notify_toml(mailbox.url())))
    result = cli("--as-of", "2013-03-01", "build")
    assert result.exit_code == 4, result.output
    assert len(mailbox.mails) == 1
    mail = mailbox.mails[0]
    assert "Subject: stockcli build failed (exit 4)" in mail
    assert "nothing to do: no data or no production model" in mail
    assert "stockcli process" in mail  # the error's hint: which command fills what is missing


def test_a_receiver_that_is_down_changes_nothing_but_a_ledger_warning(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    url = f"json://hook:{TOKEN}@127.0.0.1:{port}/{PATH_TOKEN}"
    config = write_config(tmp_path, database_url, extra=notify_toml(url))
    result = Cli(config)("--as-of", "2013-03-01", "build")
    assert result.exit_code == 4, result.output  # the run's own code
    rows = ledger(config)
    assert [(command, status) for command, status, _ in rows] == [("build", "failed")]
    warnings = rows[0][2]
    assert warnings and len(warnings) == 1
    assert f"Notification 'failure' to json://***@127.0.0.1:{port}/*** not delivered (2 tries)" in warnings[0]
    assert TOKEN not in str(rows) and PATH_TOKEN not in str(rows)


def test_notify_test_says_per_url_whether_it_went_through(
    tmp_path: Path, mailbox: Mailbox, webhook: Webhook
) -> None:
    down = f"json://127.0.0.1:{free_port()}/{PATH_TOKEN}"
    cli = Cli(write_config(tmp_path, extra=notify_toml(mailbox.url(), webhook.url(), down)))
    result = cli("--json", "notify", "--test")
    assert result.exit_code == 1, result.output
    deliveries = json.loads(result.stdout)["deliveries"]
    assert [(d["url"], d["delivered"]) for d in deliveries] == [
        (f"mailto://127.0.0.1:{mailbox.port}?smtp=127.0.0.1&mode=insecure&from=***&to=***", True),
        (f"json://***@127.0.0.1:{webhook.port}/***", True),
        (down.replace(PATH_TOKEN, "***"), False),
    ]
    assert len(mailbox.mails) == 1 and webhook.posts[0]["title"] == "stockcli test notification"
    assert Cli(write_config(tmp_path, extra=notify_toml(webhook.url())))("notify", "--test").exit_code == 0
    unset = Cli(write_config(tmp_path))("notify", "--test")
    assert unset.exit_code == 2 and "No notification URL is configured" in unset.output
    shown = Cli(write_config(tmp_path))("--json", "notify")  # no URL: still the command's JSON object
    assert shown.exit_code == 0 and json.loads(shown.stdout)["urls"] == []


# --- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        (
            "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/4242",
            "tgram://***/***",
            ["AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"],
        ),
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            "slack://***/***",
            ["TIiajkdnlazkcOXrIdevi7FQ"],
        ),
        (
            "ntfy://me:hunter22@ntfy.sh/stockcli-alerts?priority=high",
            "ntfy://***@ntfy.sh/***?priority=high",
            ["hunter22", "stockcli-alerts"],
        ),
        (
            "mailtos://me:app-pass-word@gmail.com?to=ops@example.org",
            "mailtos://***@gmail.com?to=***",
            ["app-pass-word", "ops@example.org"],
        ),
        (
            "jsons://hooks.example.com/T00/B00/XXXXsecretXXXX?token=abcdefgh123",
            "jsons://hooks.example.com/***?token=***",
            ["XXXXsecretXXXX", "abcdefgh123"],
        ),
    ],
)
def test_a_notification_url_is_shown_masked_and_its_secrets_are_hidden_in_any_text(
    url: str, shown: str, secrets: list[str]
) -> None:
    from stockcli import redact

    assert redact.redact_notify_url(url) == shown
    redact.hide(redact.notify_url_secrets(url))
    text = f"POST https://api.example.net/bot{secrets[0]}/send failed for {url} ({secrets[-1]})"
    hidden = redact.redact_url(text)
    assert not any(secret in hidden for secret in secrets), hidden
    assert "failed for ***" in hidden


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[notify]\nevents = ["failure", "fail"]\n', '[notify] events in {file} must be a list of "failure"'),
        (
            f'[notify]\nurls = ["nosuch://{TOKEN}@h.example.com"]\n',
            "[notify] urls in {file} lists nosuch://***@h.example.com, which Apprise",
        ),
        (f'[notify]\nurls = ["json//{TOKEN}"]\n', "[notify] urls in {file} lists ***, which is not a URL"),
        (
            f'[notify]\nurls = "json://a:{TOKEN}@h.example.com"\ntimeout_s = 0\n',
            "[notify] timeout_s in {file}",
        ),
    ],
)
def test_bad_notify_settings_are_refused_at_load_without_showing_a_token(
    tmp_path: Path, toml: str, expected: str
) -> None:
    config = write_config(tmp_path, extra=toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert caught.value.exit_code == 2
    assert expected.format(file=config) in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_urls_come_from_the_environment_as_one_string(tmp_path: Path) -> None:
    urls = f"json://h.example.com/{PATH_TOKEN} mailto://me:{TOKEN}@example.com"
    settings = load_settings(write_config(tmp_path), environ={"STOCKCLI_NOTIFY__URLS": urls})
    assert settings.notify.urls == tuple(urls.split())
    assert TOKEN not in repr(settings) and PATH_TOKEN not in repr(settings)


# --- secrets --------------------------------------------------------------------------------------------


def run_stockcli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
    env.update(STOCKCLI_CONFIG=str(config), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "stockcli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_token_in_a_notification_url_never_shows(tmp_path: Path, webhook: Webhook) -> None:
    """A live receiver and a dead one, `--verbose` logs on: the password and the path token appear
    nowhere, neither in the outputs nor in the ledger nor in `report` (which shows the warning)."""
    dead = f"json://hook:{TOKEN}@127.0.0.1:{free_port()}/{PATH_TOKEN}"
    config = write_config(tmp_path, extra="[data]\nstart = 2013-02-01\n" + notify_toml(webhook.url(), dead))
    outputs = []
    in_process = Cli(config)
    for args, code in (
        (("--as-of", "2013-03-01", "fetch", "-t", "GOOG"), 0),
        (("--as-of", "2013-03-01", "build"), 4),
        (("--verbose", "notify", "--test"), 1),  # a process of its own: its logging
        (("notify",), 0),
        (("--json", "report"), 0),
        (("report",), 0),
    ):
        if "--verbose" in args:
            result = run_stockcli(config, *args)
            assert result.returncode == code, (args, result.stderr)
            outputs += [result.stdout, result.stderr]
        else:
            ran = in_process(*args)
            assert ran.exit_code == code, (args, ran.output)
            outputs += [ran.stdout, ran.stderr]
    assert "DEBUG" in outputs[5] and "Notifying 1 service" in outputs[5]  # Apprise's own logs were on
    assert "json://***@127.0.0.1" in outputs[4]  # the URLs of `notify --test`, masked
    runs = json.loads(outputs[8])["runs"]
    assert [(run["command"], len(run["warnings"])) for run in runs] == [("build", 1), ("fetch", 0)]
    assert "not delivered" in runs[0]["warnings"][0] and "not delivered" in outputs[10]
    assert [post["title"] for post in webhook.posts] == [
        "stockcli build failed (exit 4)",
        "stockcli test notification",
    ]
    told = [post["title"] + post["message"] for post in webhook.posts]
    for text in [*outputs, str(ledger(config)), *told]:
        assert TOKEN not in text and PATH_TOKEN not in text


def test_a_dead_receiver_is_tried_once_per_run_and_the_others_get_everything(
    make_settings: Any, webhook: Webhook
) -> None:
    dead = f"json://127.0.0.1:{free_port()}/{PATH_TOKEN}"
    retrained = RetrainResult(ran=True, reason="Forced with --force.", model_version="9", promoted=True)
    settings = make_settings(notify={"urls": [dead, webhook.url()], "events": list(NOTIFY_EVENTS)})
    messages = notify.daily_messages(daily_result(retrain=retrained))
    warnings = notify.send(settings.notify, messages)
    assert len(webhook.posts) == len(messages) == 3  # retrain, promotion, summary
    assert len(warnings) == 3
    assert "(2 tries)" in warnings[0] and all("(0 tries): not tried" in w for w in warnings[1:])


def test_a_failed_daemon_job_is_told_and_the_daemon_goes_on(tmp_path: Path, webhook: Webhook) -> None:
    from stockcli import daemon

    (tmp_path / "data").write_text("a file where the data dir should be", encoding="utf-8")
    settings = load_settings(
        None,
        environ={},
        overrides={"storage": {"data_dir": str(tmp_path / "data")}, "notify": {"urls": [webhook.url()]}},
    )
    outcome = daemon.run_daily_job(settings, as_of=date(2013, 3, 1))
    assert outcome.status == "failed"
    assert [post["title"] for post in webhook.posts] == ["stockcli daily (daemon) failed (exit 2)"]
    assert "usage or configuration error" in webhook.posts[0]["message"]


@pytest.mark.slow
def test_a_real_daily_run_sends_its_summary_and_band_breaks(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, webhook: Webhook
) -> None:
    """The bootstrapped workspace of the fault tests (Production = version 1), GOOG's stored band moved
    away from the close to come, then the next session's `daily` through the real CLI: the webhook
    gets the band break the monitor scored, then the summary."""
    from stockcli.db.models import ModelPerformance
    from tests.faults.pipeline import NEXT_AS_OF, bootstrapped_workspace, copy_workspace

    workspace = copy_workspace(bootstrapped_workspace(tmp_path_factory), tmp_path / "ws")
    with workspace.config_path.open("a", encoding="utf-8") as config:
        config.write(notify_toml(webhook.url(), events=json.dumps(list(NOTIFY_EVENTS))))
    try:
        with workspace.engine.begin() as connection:  # GOOG's band for 2013-02-04 made to miss its close
            connection.execute(
                update(LatestPrediction)
                .where(LatestPrediction.ticker == "GOOG")
                .values(q025=LatestPrediction.base_close * 1.20, q975=LatestPrediction.base_close * 1.30)
            )
        result = workspace.cli("--as-of", NEXT_AS_OF, "--json", "daily", "--no-retrain")
        assert result.exit_code == 0, result.output
        with workspace.engine.connect() as connection:
            scored = connection.execute(
                select(ModelPerformance.ticker, ModelPerformance.actual_close, ModelPerformance.q025)
                .add_columns(ModelPerformance.q975)
                .order_by(ModelPerformance.ticker)
            ).all()
        warnings = [row[2] for row in ledger(workspace.config_path) if row[0] == "daily"]
    finally:
        workspace.close()
    broken = [ticker for ticker, actual, low, high in scored if not low <= actual <= high]
    assert broken == ["GOOG"]
    titles = [post["title"] for post in webhook.posts]
    assert titles == [
        "stockcli: 1 close outside the 95% band (GOOG)",
        "stockcli daily 2013-02-04: ok, for 2013-02-05",
    ]
    assert "GOOG 2013-02-04: close " in webhook.posts[0]["message"]
    predicted = json.loads(result.stdout)["predictions"]
    for prediction in predicted:
        assert f"{prediction['ticker']} {prediction['base_close']:.2f} → " in webhook.posts[-1]["message"]
    assert warnings == [None, None]  # the bootstrap's run and this one: everything delivered


def test_a_long_list_is_cut_to_fit_a_phone() -> None:
    breaks = [BandBreak(f"T{i:03d}", date(2013, 3, 1), 2.0, 1.0, 1.5, "7") for i in range(60)]
    message = notify.band_break_message(breaks)
    assert message is not None
    assert (
        message.title == "stockcli: 60 closes outside the 95% band (T000, T001, T002, T003, T004 and 55 more)"
    )
    lines = message.body.splitlines()
    assert len(lines) == notify.MAX_LINES and lines[-1] == "... and 36 more."


def test_a_database_that_is_down_is_told_all_the_same(tmp_path: Path, webhook: Webhook) -> None:
    config = write_config(tmp_path, extra=notify_toml(webhook.url()))
    url = f"postgresql+psycopg://postgres:{TOKEN}@127.0.0.1:{free_port()}/stockcli"
    result = Cli(config)("--as-of", "2013-03-01", "build", env={"STOCKCLI_DATABASE_URL": url})
    assert result.exit_code != 0
    assert [post["title"] for post in webhook.posts] == [f"stockcli build failed (exit {result.exit_code})"]
    assert (
        "postgres:***@127.0.0.1" in webhook.posts[0]["message"] and TOKEN not in webhook.posts[0]["message"]
    )
