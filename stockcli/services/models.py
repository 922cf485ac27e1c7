"""Registered model versions: which one is Production (resolved here and nowhere else), and the list.

Design note 8: a run resolves the Production alias once, so a promotion made meanwhile never mixes two
models in one run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stockcli.config import Settings
from stockcli.errors import NoProductionModelError

if TYPE_CHECKING:
    from stockcli.ml.registry import ModelVersionInfo


def production_version(settings: Settings) -> str | None:
    """The version the Production alias points at now, or None; RegistryError when it cannot be read."""
    from stockcli.ml import registry

    return registry.resolve_alias(settings, registry.PRODUCTION_ALIAS)


def require_production_version(settings: Settings) -> str:
    """`production_version`, or NoProductionModelError (exit 4) when there is none."""
    version = production_version(settings)
    if version is None:
        raise NoProductionModelError(
            "No production model yet.", hint="Run `stockcli retrain --force` first (or `stockcli daily`)."
        )
    return version


def list_versions(settings: Settings) -> list[ModelVersionInfo]:
    """Every registered version, newest first, with its aliases and test metrics (`stockcli models`)."""
    from stockcli.ml import registry

    return registry.list_versions(settings)
