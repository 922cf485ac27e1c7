"""The dashboard in a real browser: `stockcli serve` in a subprocess, headless Chromium driven by Playwright.

Chromium is Debian's `chromium` package (Playwright never downloads a browser here): the set-up installs
it with apt-get when it is missing and we are root; elsewhere the test is skipped with the reason. In CI
(CI=true) it must run, so a failed set-up fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stockcli.config import load_settings
from tests import report_data
from tests.conftest import write_config

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI") == "true"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"The browser test must run in CI: {reason}")
    pytest.skip(reason)


def _install_chromium() -> str | None:
    """Install Debian's chromium when missing; returns why it is unavailable, or None."""
    if CHROMIUM.exists():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and apt-get cannot install it here (not root, or no apt-get)."
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "chromium"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, check=False)
    if result.returncode != 0:  # a stale package list: refresh it once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600, check=False)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, check=False)
    if not CHROMIUM.exists():
        return f"`apt-get install chromium` failed: {(result.stderr or result.stdout).strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    reason = _install_chromium()
    if reason:
        _skip_or_fail(reason)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip_or_fail("The `playwright` Python package is not installed (pip install -e '.[dev]').")
    return str(CHROMIUM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, report_data.Filled]]:
    """`stockcli serve` on a free loopback port over a filled SQLite database."""
    config = write_config(tmp_path)
    settings = load_settings(config, environ={})
    filled = report_data.fill(settings)
    report_data.add_horizons(settings, filled)  # GOOG: the 20-session fan and the VaR exceptions
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "stockcli", "--config", str(config), "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"stockcli serve exited with {process.returncode}: {(tmp_path / 'serve.log').read_text()}"
                )
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"stockcli serve did not answer within 30 s: {(tmp_path / 'serve.log').read_text()}"
                )
            time.sleep(0.1)
        yield base, filled
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_dashboard_in_headless_chromium(
    chromium: str, server: tuple[str, report_data.Filled], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    base, filled = server
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console", lambda message: problems.append(message.text) if message.type == "error" else None
            )
            response = page.goto(f"{base}/", wait_until="load")
            # The browser may keep the page, and must ask again (If-None-Match) before using it.
            assert response is not None and response.headers["cache-control"] == "no-cache"
            assert response.headers["etag"].startswith('"')
            assert page.locator("#ticker-select option").all_inner_texts() == list(filled.tickers)

            with page.expect_navigation():
                page.select_option("#ticker-select", "^GSPC")

            chart = page.locator('svg#price-chart[data-ticker="^GSPC"]')
            chart.wait_for(state="visible", timeout=10_000)
            points = chart.locator("polyline.actual").get_attribute("points") or ""
            assert len(points.split()) == 60
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            predicted = chart.locator("circle.predicted.point")
            assert predicted.count() == 1 and predicted.bounding_box() is not None
            assert chart.locator("rect.naive.point").count() == 1

            # The fan at the predicted session: the dark 80% band drawn inside the light 95% band,
            # both around the served point, and styled by the stylesheet (dark over light).
            light, dark = chart.locator("polygon.band.band-95"), chart.locator("polygon.band.band-80")
            assert light.count() == dark.count() == 1
            outer, inner, dot = light.bounding_box(), dark.bounding_box(), predicted.bounding_box()
            assert outer is not None and inner is not None and dot is not None
            assert inner["height"] > 20 and outer["height"] > inner["height"] and outer["width"] > 30
            assert outer["y"] < inner["y"] and inner["y"] + inner["height"] < outer["y"] + outer["height"]
            assert outer["y"] < dot["y"] + dot["height"] / 2 < outer["y"] + outer["height"]
            opacity = "el => parseFloat(getComputedStyle(el).fillOpacity)"
            assert 0 < light.evaluate(opacity) < dark.evaluate(opacity) < 1
            assert "dark band" in page.locator(".chart-panel .band-legend").inner_text()

            panel = page.locator("#prediction-panel").inner_text()
            assert "^GSPC" in panel and "unseen" in panel and "rolling" in panel and "P(up)" in panel
            table = page.locator("#predictions-table")
            for ticker, value in filled.predicted.items():
                cell = table.locator(f'tbody tr[data-ticker="{ticker}"] td.predicted-close')
                assert cell.inner_text() == f"{value:,.2f}"
            assert (
                page.locator('#performance-table tbody tr[data-ticker="MSFT"]')
                .inner_text()
                .count("Worse than naive")
                == 1
            )
            assert page.locator("#production-model").is_visible()

            chart.screenshot(path=str(tmp_path / "fan-chart.png"))
            # GOOG has stored horizons: the fan reaches 20 sessions ahead, its 95% band wider at the
            # farthest horizon than at the next session, and the VaR chart rings the one exception.
            with page.expect_navigation():
                page.select_option("#ticker-select", "GOOG")
            fan = page.locator('svg#price-chart[data-ticker="GOOG"]')
            fan.wait_for(state="visible", timeout=10_000)
            light, dark = fan.locator("polygon.fan.fan-95"), fan.locator("polygon.fan.fan-80")
            outer, inner = light.bounding_box(), dark.bounding_box()
            assert outer is not None and inner is not None and outer["height"] > inner["height"] > 20
            whiskers = [
                fan.locator(f'g.horizon-mark[data-horizon="{h}"] line').bounding_box() for h in (1, 20)
            ]
            assert whiskers[0] is not None and whiskers[1] is not None
            assert whiskers[1]["height"] > 2 * whiskers[0]["height"]
            assert fan.locator("path.past-band").count() == 2
            var = page.locator('svg#var-chart[data-ticker="GOOG"]')
            ring = var.locator("circle.exception.exception-99[data-date]")
            assert ring.count() == 1 and (ring.bounding_box() or {}).get("width", 0) > 4
            assert "Basel zone green" in page.locator("#var-exceptions").inner_text()

            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
            fan.screenshot(path=str(tmp_path / "horizon-fan.png"))
        finally:
            browser.close()
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    assert problems == []
    # Everything the page loaded came from the app itself: no CDN, no fonts from the network.
    assert requested and all(url.startswith(base) or url.startswith("data:") for url in requested), requested
