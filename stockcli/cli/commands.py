"""Imports every command module so that each registers its commands on the root app."""

from stockcli.cli import db_commands  # noqa: F401
