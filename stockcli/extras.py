"""Optional parts of stockcli, each installed by its extra: `pip install 'stockcli[web]'`.
Code that needs one calls `require` before importing it: a missing part is one line (exit 2)."""

from __future__ import annotations

import importlib.util

from stockcli.errors import MissingExtraError

EXTRAS: dict[str, tuple[str, ...]] = {
    "web": ("fastapi", "uvicorn", "starlette", "prometheus_client"),  # stockcli serve
    "postgres": ("psycopg",),  # PostgreSQL databases (ours and Optuna's)
}


def require(extra: str, purpose: str) -> None:
    """Raise MissingExtraError when a module of `extra` is not installed; `purpose` says what needs it."""
    missing = [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtraError(
            f"{purpose} needs {', '.join(missing)}, which is not installed.",
            hint=f"Install it with `pip install 'stockcli[{extra}]'`.",
        )
