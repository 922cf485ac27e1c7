"""The web views as services: `stockcli serve` (the dashboard) and `report --html` (one HTML file).

The CLI reaches `stockcli.web` only through here; the web app itself reads through the services.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

from stockcli.config import Settings, redact_url
from stockcli.errors import UsageError

if TYPE_CHECKING:
    from stockcli.services.report import Report


def check_address(host: str, port: int) -> None:
    """Raise UsageError (exit 2) when nothing can listen on `host`:`port` (taken, or not ours)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise UsageError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
            hint="Pick another port with --port, or stop what uses it.",
        ) from None


def serve(settings: Settings, *, host: str, port: int, verbose: bool = False) -> None:
    """Run the read-only dashboard on `host`:`port` until interrupted (access log when `verbose`)."""
    import uvicorn

    from stockcli.web.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info" if verbose else "warning",
        access_log=verbose,
    )


def write_report_html(settings: Settings, report: Report, path: Path) -> Path:
    """Write `report` as one self-contained HTML file at `path` (see `report.write_html_report`)."""
    from stockcli.services.report import write_html_report
    from stockcli.web.pages import render_report_html

    html = render_report_html(report, database=redact_url(settings.database_url))
    return write_html_report(settings, path, html)
