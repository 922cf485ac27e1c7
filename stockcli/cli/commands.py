"""Imports every command module so that each registers its commands on the root app."""

from stockcli.cli import db_commands  # noqa: F401
from stockcli.cli import ops_commands  # noqa: F401
from stockcli.cli import tune_commands  # noqa: F401
from stockcli.cli import model_commands  # noqa: F401
from stockcli.cli import fetch_commands  # noqa: F401
from stockcli.cli import report_commands  # noqa: F401
from stockcli.cli import dataset_commands  # noqa: F401
