"""Imports every command module so that each registers its commands on the root app."""

from stockcli.cli import (
    dataset_commands,  # noqa: F401
    db_commands,  # noqa: F401
    fetch_commands,  # noqa: F401
    model_commands,  # noqa: F401
    ops_commands,  # noqa: F401
    report_commands,  # noqa: F401
    tune_commands,  # noqa: F401
)
