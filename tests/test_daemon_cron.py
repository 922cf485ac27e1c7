"""`[daemon] cron` with crontab's meaning (issue 19, finding 2): day-of-week 0 and 7 are Sunday (not
APScheduler 3's Monday), a restricted day-of-month and day-of-week are ORed, and `stockcli daemon
--show-schedule` prints the next five runs in the exchange's time zone without starting anything."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from stockcli import daemon
from stockcli.config import load_settings
from stockcli.cron import cron_trigger, crontab_weekdays
from stockcli.errors import ConfigError
from tests.conftest import Cli, write_config

NEW_YORK = ZoneInfo("America/New_York")
SATURDAY = datetime(2013, 3, 2, 12, 0, tzinfo=NEW_YORK)


def schedule(tmp_path: Path, cron: str, count: int = 5) -> list[str]:
    settings = load_settings(write_config(tmp_path, extra=f'[daemon]\ncron = "{cron}"\n'), environ={})
    return [f"{run:%a %m-%d %H:%M}" for run in daemon.next_runs(settings, count=count, now=SATURDAY)]


def test_the_readme_line_runs_monday_to_friday(tmp_path: Path) -> None:
    assert schedule(tmp_path, "30 17 * * 1-5") == [
        "Mon 03-04 17:30",
        "Tue 03-05 17:30",
        "Wed 03-06 17:30",
        "Thu 03-07 17:30",
        "Fri 03-08 17:30",
    ]
    assert schedule(tmp_path, "30 17 * * mon-fri") == schedule(tmp_path, "30 17 * * 1-5")


@pytest.mark.parametrize(
    ("cron", "days"), [("0 9 * * 0", {"Sun"}), ("0 9 * * 7", {"Sun"}), ("0 9 * * 6,0", {"Sat", "Sun"})]
)
def test_sunday_is_0_and_7(tmp_path: Path, cron: str, days: set[str]) -> None:
    assert {run.split()[0] for run in schedule(tmp_path, cron, count=6)} == days


def test_day_of_month_or_day_of_week_as_crontab_means_it(tmp_path: Path) -> None:
    # The 1st of each month OR any Monday (APScheduler alone: only a Monday that is the 1st).
    assert schedule(tmp_path, "0 17 1 * mon", count=6) == [
        "Mon 03-04 17:00",
        "Mon 03-11 17:00",
        "Mon 03-18 17:00",
        "Mon 03-25 17:00",
        "Mon 04-01 17:00",
        "Mon 04-08 17:00",
    ]
    assert "Wed 05-01 17:00" in schedule(tmp_path, "0 17 1 * 1", count=12)


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("1-5", "mon-fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("0,6", "sat-sun"),
        ("*/2", "tue,thu,sat-sun"),
        ("tue-sat", "tue-sat"),
    ],
)
def test_crontab_days_become_apscheduler_names(field: str, names: str) -> None:
    assert crontab_weekdays(field) == names


@pytest.mark.parametrize("cron", ["30 17 * * 8", "30 17 * * 5-1", "30 17 * * 1/0", "30 17 * * last"])
def test_a_day_of_week_crontab_does_not_know_is_refused(cron: str) -> None:
    with pytest.raises(ConfigError, match="not a valid crontab expression"):
        cron_trigger(cron, "XNYS")


def test_the_scheduler_fires_on_monday_after_a_friday(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, extra='[daemon]\ncron = "30 17 * * 1-5"\n'), environ={})
    scheduler = daemon.build_scheduler(settings, lambda: None)
    friday_evening = datetime(2013, 3, 1, 19, tzinfo=NEW_YORK)
    assert daemon.next_run_time(scheduler, now=friday_evening) == datetime(
        2013, 3, 4, 17, 30, tzinfo=NEW_YORK
    )


@pytest.mark.parametrize("json_output", [False, True])
def test_show_schedule_prints_five_weekday_runs_and_starts_nothing(tmp_path: Path, json_output: bool) -> None:
    cli = Cli(write_config(tmp_path, extra='[daemon]\ncron = "30 17 * * 1-5"\n'))
    result = cli(*(["--json"] if json_output else []), "daemon", "--show-schedule")
    assert result.exit_code == 0, result.output
    if json_output:
        runs = [datetime.fromisoformat(text) for text in json.loads(result.output)["next_runs"]]
        assert len(runs) == 5
        local = [run.astimezone(NEW_YORK) for run in runs]
        assert all(
            run.utcoffset() == local_run.utcoffset() for run, local_run in zip(runs, local, strict=True)
        )
        assert sorted({run.weekday() for run in local}) == [0, 1, 2, 3, 4]
        assert {(run.hour, run.minute) for run in local} == {(17, 30)}
    else:
        lines = [line for line in result.output.splitlines() if line.startswith("  ")]
        assert len(lines) == 5 and all("17:30" in line for line in lines)
        assert sorted(line.split()[0] for line in lines) == sorted(["Mon", "Tue", "Wed", "Thu", "Fri"])
        assert "America/New_York" in result.output
    assert not (tmp_path / "data").exists()  # no database, no lock file, no catch-up run
