"""`stockcli notify`: the notification settings, and `--test` to send one message to every URL."""

from __future__ import annotations

from typing import Annotated

import typer

from stockcli.cli import output
from stockcli.cli.state import state


def notify(
    ctx: typer.Context,
    test: Annotated[
        bool, typer.Option("--test", help="Send one test message to every URL; say per URL whether it went.")
    ] = False,
) -> None:
    """Show the [notify] URLs (secrets hidden) and events; --test sends one message to each URL."""
    from stockcli.errors import EXIT_UNEXPECTED, ConfigError
    from stockcli.notify import deliver, probe_message
    from stockcli.redact import redact_notify_url

    cli = state(ctx)
    config = cli.settings().notify
    if not config.urls and not test:
        if cli.json:
            output.emit("notify", config, urls=[])
        else:
            output.info("No notification URL is configured ([notify] urls, or STOCKCLI_NOTIFY__URLS).")
        return
    if not config.urls:
        raise ConfigError(
            "No notification URL is configured: [notify] urls is empty and STOCKCLI_NOTIFY__URLS is not set.",
            hint='Add e.g. [notify] urls = ["mailto://you@example.com"] to config.toml (Apprise URLs).',
        )
    if not test:
        shown = [redact_notify_url(url) for url in config.urls]
        if cli.json:
            output.emit("notify", config, urls=shown)
            return
        output.table("Notification URLs", ["url"], [[url] for url in shown])
        output.info(
            f"Events: {', '.join(config.events) or 'none'}. Run `stockcli notify --test` to try them."
        )
        return
    deliveries = deliver(config, probe_message())
    if cli.json:
        output.emit("notify --test", deliveries=deliveries)
    else:
        output.table(
            "Test notification",
            ["url", "delivered", "tries", "problem"],
            [[d.url, "yes" if d.delivered else "no", str(d.attempts), d.problem or ""] for d in deliveries],
            text=["problem"],
        )
    if not all(d.delivered for d in deliveries):
        raise typer.Exit(EXIT_UNEXPECTED)
