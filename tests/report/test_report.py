"""``moodring backtest --report``: the page opened in a real Chromium, as a person would.

One report (the shipped config on the longest real daily history, with a sweep) and one
browser session serve every test here. Playwright's sync API keeps an event loop running
while the browser is open: async tests do not belong in this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moodring import __version__
from moodring.cli import main
from moodring.configfile import load_settings
from tests.support.browser import ensure_chromium
from tests.support.shipped import ARGS

SWEEP = "eth-rut-decoupling.condition.below=0.2:0.45:0.05"
RULES = [rule.name for rule in load_settings().rules]
# the budget the issue sets for ten years of daily bars; this history is 8.4 years
MAX_BYTES = 5_000_000


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The report of the shipped rules on the bundled daily history, and its sweep's rows."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    code, out, err = run("backtest", *ARGS, "--report", str(path), "--sweep", SWEEP)
    assert code == 0, err
    return path, [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    """What the same backtest prints without the report: its alerts as JSON."""
    code, out, err = run("backtest", *ARGS)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def page(report: tuple[Path, list[dict[str, Any]]]) -> Iterator[Any]:
    """The report open in headless Chromium, with its console messages and requests."""
    chromium, why = ensure_chromium()
    if chromium is None:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    path, _ = report
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.messages = []  # type: ignore[attr-defined]
        tab.requests = []  # type: ignore[attr-defined]
        tab.on("console", lambda m: tab.messages.append((m.type, m.text)))
        tab.on("pageerror", lambda e: tab.messages.append(("pageerror", str(e))))
        tab.on("request", lambda r: tab.requests.append(r.url))
        tab.goto(path.as_uri())
        tab.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0")
        for rule in RULES:  # every chart drew its panels (bokeh renders into canvases)
            charts = tab.locator(f'.rule-chart[data-rule="{rule}"] canvas')
            charts.first.wait_for(state="attached", timeout=60_000)
        yield tab
        browser.close()


def test_the_page_stands_alone_under_the_size_budget(report) -> None:
    path, _ = report
    html = path.read_text()
    assert path.stat().st_size < MAX_BYTES, path.stat().st_size
    assert not re.search(r"""<(script|link)[^>]+(src|href)=["']?(https?:)?//""", html)
    assert "cdn.bokeh.org" not in html


def test_the_page_loads_from_file_without_errors_or_requests(page, report) -> None:
    path, _ = report
    errors = [m for m in page.messages if m[0] in ("error", "pageerror")]
    assert not errors, errors
    assert page.requests == [path.as_uri()]


def test_one_chart_per_rule_and_the_summary(page, alerts, tmp_path_factory) -> None:
    for rule in RULES:
        panels = page.locator(f'.rule-chart[data-rule="{rule}"] canvas').count()
        assert panels >= 2, f"{rule}: {panels} canvases (price and metric panels expected)"
    rows = page.locator("#summary-table tbody tr")
    assert [rows.nth(i).get_attribute("data-rule") for i in range(rows.count())] == RULES
    header = page.locator("header").inner_text()
    assert f"moodring {__version__}" in header and "sha256" in header
    assert "ETHUSDT_1d.csv" in header and "2017-08-17" in header and "2026-01-06" in header
    assert f"{len(alerts)} alerts" in header
    shot = tmp_path_factory.getbasetemp() / "report.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}", file=sys.stderr)


def test_the_alert_list_filters_by_rule(page, alerts) -> None:
    rows = page.locator("#alert-list tbody tr")
    total = rows.count()
    assert total == len(alerts)
    page.select_option("#rule-filter", "eth-rut-decoupling")
    shown = page.locator("#alert-list tbody tr:visible")
    wanted = sum(a["rule"] == "eth-rut-decoupling" for a in alerts)
    assert shown.count() == wanted > 0
    assert {shown.nth(i).get_attribute("data-rule") for i in range(shown.count())} == {
        "eth-rut-decoupling"
    }
    assert page.locator("#alert-count").inner_text() == f"{wanted} alerts"
    first = shown.nth(0).inner_text().split("\t")
    decoupling = next(a for a in alerts if a["rule"] == "eth-rut-decoupling")
    assert first[0] == decoupling["time"][:10] and first[2] == decoupling["state"]
    assert first[4] == decoupling["message"]
    page.select_option("#rule-filter", "")
    assert page.locator("#alert-list tbody tr:visible").count() == total


def test_the_swept_rules_chart_switches_between_values(page, report) -> None:
    _, rows = report
    alerts = {row["value"]: row["alerts"] for row in rows}
    markers = "markers:eth-rut-decoupling:m0"
    count = f"() => Bokeh.documents[0].get_model_by_name('{markers}').data.x.length"
    assert page.evaluate(count) == alerts[0.3]  # the configured value is shown first
    chooser = page.locator("#rule-eth-rut-decoupling select")
    for value in (0.45, 0.2):
        chooser.select_option(f"{value:g}")
        page.wait_for_function(f"() => ({count})() === {alerts[value]}", timeout=10_000)
    assert alerts[0.45] > alerts[0.3] > alerts[0.2]
    errors = [m for m in page.messages if m[0] in ("error", "pageerror")]
    assert not errors, errors
    assert page.locator("#sweep-table tbody tr").count() == len(rows)
