"""Watchlist configs for the tests: a sample, and the real coins' one in both forms."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd

from moodring.cli import main
from tests.support.paths import DATA

DAILY = DATA / "daily"
ALTS = DAILY / "binance_alts"
WIDE = DAILY / "binance_alts_gnguyenquant"
BTC = f"btc={DAILY / 'binance_yanniedog/BTCUSDT_1d.csv'}"
RUT = f"rut={DAILY / 'yahoo_alitalbi/RUT.csv'}"
MEMBERS = ("ADA", "XRP", "LINK", "DOT")

# a sample: an explicit and a dynamic watchlist, templates of every kind, one plain rule
CONFIG = """\
watchlists:
  alts: [SOL/USDT, bnb/usdt, XRP/USDT]
  busiest: {top: 20, exclude: [XMR]}
feeds:
  btc: {symbol: BTC/USDT}
  rut: {symbol: ^RUT, source: yahoo, market: equity}
  "{base}": {for_each: alts, symbol: "{symbol}", stale_after: 5m}
  "{base}_top": {for_each: busiest, symbol: "{symbol}"}
series:
  "{base}btc": {for_each: alts, ratio: [{base}, btc]}
metrics:
  "{base}_rut_corr": {for_each: alts, type: correlation, a: {base}, b: rut, window: 30}
  "{base}btc_breakout": {for_each: alts, type: breakout, series: "{base}btc"}
  "{base}_top_mfi": {for_each: busiest, type: mfi, series: "{base}_top"}
rules:
  - name: "{base}-decoupling"
    for_each: alts
    metric: "{base}_rut_corr"
    condition: {below: 0.3}
    title: "{BASE} decoupling from the Russell 2000"
    message: "{{rule}} {{ {base}_rut_corr | round(2) }} on {exchange} ({watchlist}, {QUOTE})"
  - name: sol-and-btc
    all:
      - {metric: sol_rut_corr, below: 0.3}
      - {metric: solbtc_breakout, equals: 1}
  - name: "{base}-hot"
    for_each: busiest
    metric: "{base}_top_mfi"
    condition: {above: 80}
"""


def write(tmp_path: Path, text: str = CONFIG, name: str = "moodring.yaml") -> Path:
    """Write a config file into ``tmp_path``."""
    path = tmp_path / name
    path.write_text(text)
    return path


FEEDS = """\
feeds:
  btc: {symbol: BTC/USDT}
  rut: {symbol: ^RUT, source: yahoo, market: equity}
"""
# one member's part of the config; the template is the same with {base}/{BASE}
MEMBER = """\
  - name: "{base}-decoupling"
    metric: "{base}_rut_corr"
    condition: {below: 0.2}
    clear: {above: 0.5}
    for: 2
    send_resolved: true
    title: "{BASE} decoupling from the Russell 2000"
    message: "30d corr {{ value | round(3) }}, {BASE}/BTC breakout {{ {base}btc_breakout }}"
  - name: "{base}btc-breakout"
    metric: "{base}btc_breakout"
    condition: {crosses_above: 0.5}
    cooldown: 30d
    message: "{BASE}/BTC above its 20-day range; MFI {{ {base}_mfi | round(1) }}"
"""
METRICS = """\
  "{base}_rut_corr": {type: correlation, a: {base}, b: rut, window: 30}
  "{base}_mfi": {type: mfi, series: "{base}", period: 14}
  "{base}btc_breakout": {type: breakout, series: "{base}btc", lookback: 20}
"""


def templated() -> str:
    """The watchlist config: each part once, for_each member."""
    members = ", ".join(f"{m}/USDT" for m in MEMBERS)
    metrics = "".join(
        line.replace('": {', '": {for_each: alts, ', 1) + "\n" for line in METRICS.splitlines()
    )
    rules = MEMBER.replace('  - name: "{base}', '  - for_each: alts\n    name: "{base}')
    return (
        f"watchlists:\n  alts: [{members}]\n{FEEDS}"
        '  "{base}": {for_each: alts, symbol: "{symbol}"}\n'
        'series:\n  "{base}btc": {for_each: alts, ratio: [{base}, btc]}\n'
        f"metrics:\n{metrics}rules:\n{rules}"
    )


def written_out() -> str:
    """The same config with every member's part written by hand, in the expansion's order."""

    def each(text: str) -> str:
        return "".join(text.replace("{base}", m.lower()).replace("{BASE}", m) for m in MEMBERS)

    feeds = each('  "{base}": {symbol: "{BASE}/USDT"}\n')
    series = each('  "{base}btc": {ratio: [{base}, btc]}\n')
    metrics = "".join(each(line + "\n") for line in METRICS.splitlines())
    rules = "".join(each(rule) for rule in _rules(MEMBER))
    return f"{FEEDS}{feeds}series:\n{series}metrics:\n{metrics}rules:\n{rules}"


def _rules(text: str) -> list[str]:
    parts = text.split("  - name:")[1:]
    return [f"  - name:{part}" for part in parts]


def backtest(tmp_path: Path, config: str, *args: str) -> tuple[list[dict], pd.DataFrame]:
    """Backtest ``config`` on BTC and the Russell 2000 (and ``args``): alerts, metrics table."""
    path = tmp_path / "config.yaml"
    path.write_text(config)
    out = tmp_path / "metrics.csv"
    stdout = tmp_path / "alerts.jsonl"
    with stdout.open("w") as sink, contextlib.redirect_stdout(sink):
        argv = ["backtest", "-c", str(path), "--data", BTC, "--data", RUT, *args]
        code = main(["--log-level", "WARNING", *argv, "--metrics-out", str(out)])
    assert code == 0
    return [json.loads(line) for line in stdout.read_text().splitlines()], pd.read_csv(out)
