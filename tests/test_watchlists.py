"""Watchlists in the config: for_each expansion, its errors, overrides, silences, snapshots."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.cli import main
from moodring.configfile import ConfigError, load_settings, show_config, with_members
from moodring.expansion import fill
from moodring.market.bar import Bar
from moodring.pipeline import Pipeline
from moodring.rules.silences import Silences
from moodring.service.snapshot import capture, load, restore, save
from moodring.settings import Member
from tests.oracles import DATA

ALTS = DATA / "daily/binance_alts"
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


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MOODRING_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str = CONFIG, name: str = "moodring.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_templates_expand_per_member_in_place_with_their_placeholders(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path))
    assert list(settings.feeds) == ["btc", "rut", "sol", "bnb", "xrp"]
    assert settings.feeds["bnb"].symbol == "BNB/USDT" and settings.feeds["sol"].stale_after == 300
    assert settings.series["xrpbtc"].ratio == ("xrp", "btc")  # an unquoted {base} too
    assert list(settings.metrics) == [
        "sol_rut_corr",
        "bnb_rut_corr",
        "xrp_rut_corr",
        "solbtc_breakout",
        "bnbbtc_breakout",
        "xrpbtc_breakout",
    ]
    assert [r.name for r in settings.rules] == [
        "sol-decoupling",
        "bnb-decoupling",
        "xrp-decoupling",
        "sol-and-btc",
    ]
    rule = settings.rules[1]
    assert rule.metric == "bnb_rut_corr"
    assert rule.title == "BNB decoupling from the Russell 2000"
    # a placeholder inside {{ ... }} is filled
    assert rule.message == "{{rule}} {{ bnb_rut_corr | round(2) }} on binance (alts, USDT)"
    origin = settings.origin("rules", "bnb-decoupling")
    assert origin is not None and origin.template == "{base}-decoupling"
    assert origin.member == Member("BNB/USDT", "BNB", "USDT") and origin.watchlist == "alts"
    assert settings.template_of("sol-and-btc") is None
    # the dynamic watchlist is ranked at run time: none of its templates yet
    assert settings.members("busiest") == () and "sol-hot" not in {r.name for r in settings.rules}
    ranked = with_members(settings, {"busiest": [Member.of("ADA/USDT")]})
    assert ranked.feeds["ada_top"].symbol == "ADA/USDT"
    assert [r.name for r in ranked.rules][-1] == "ada-hot"
    assert ranked.template_of("ada-hot") == "{base}-hot"


def test_fill_leaves_jinja_alone_and_takes_yaml_unquoted_placeholders() -> None:
    values = {"base": "sol", "BASE": "SOL"}
    assert fill("{{base}} {{ {base}_x }} {BASE}{% if a %}{base}{% endif %}", values) == (
        "{{base}} {{ sol_x }} SOL{% if a %}sol{% endif %}"
    )
    assert fill({"ratio": [{"base": None}, "btc"]}, values) == {"ratio": ["sol", "btc"]}
    assert fill({"nope": None}, values) == {"nope": None}


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        (
            "window: 30}",
            "window: 1}",
            "metrics.{base}_rut_corr.window",
            "member SOL/USDT of watchlist alts, and 2 more): Input should be greater",
        ),
        (
            'metric: "{base}_rut_corr"',
            'metric: "{base}_rut_cor"',
            "rules.0.metric",
            "member SOL/USDT of watchlist alts): unknown metric output 'sol_rut_cor'",
        ),
        (
            "stale_after: 5m}",
            "stale_afer: 5m}",
            "feeds.{base}.stale_afer",
            "member SOL/USDT of watchlist alts, and 2 more): unknown key",
        ),
        (
            "for_each: alts, type: breakout",
            "for_each: alt, type: breakout",
            "metrics.{base}btc_breakout.for_each",
            "unknown watchlist 'alt' (known: alts, busiest)",
        ),
        (
            '"{base}btc": {for_each',
            '"{bse}btc": {for_each',
            "series.{bse}btc",
            "unknown placeholder {bse}",
        ),
        (
            'title: "{BASE} decoupling',
            'title: "{Base} decoupling',
            "rules.0.title",
            "unknown placeholder {Base}",
        ),
        (
            'name: "{base}-decoupling"',
            "name: decoupling",
            "rules.0.name",
            "needs {base}, {BASE} or {symbol}: else every member gets the same name",
        ),
        (
            "  btc: {symbol: BTC/USDT}",
            "  btc: {symbol: BTC/USDT}\n  xrp: {symbol: XRP/USDT}",
            "feeds.{base}",
            "member XRP/USDT makes 'xrp', a name an entry of its own has",
        ),
        (
            'series: "{base}_top"}',
            'series: "{base}_tops"}',
            "metrics.{base}_top_mfi.series",
            "checked with a stand-in member MEMBER/USDT: watchlist busiest is ranked at run "
            "time): unknown series 'member_tops'",
        ),
        (
            "[SOL/USDT, bnb/usdt, XRP/USDT]",
            "[SOL/USDT, SOLUSDT]",
            "watchlists.alts.members",
            "'SOLUSDT': give a member as BASE/QUOTE, e.g. SOL/USDT",
        ),
    ],
    ids=[
        "field",
        "reference",
        "unknown-key",
        "watchlist",
        "placeholder-in-name",
        "placeholder-in-text",
        "same-name",
        "clash",
        "stand-in",
        "member",
    ],
)
def test_template_errors_name_its_key_path_line_and_member(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    assert old in CONFIG
    text = CONFIG.replace(old, new, 1)
    message = error_of(write(tmp_path, text))
    found = [line for line in message.splitlines() if line.strip().startswith(f"{key} (")]
    assert len(found) == 1, message
    # a clash is the template's: its line, not the other entry's
    at = line_of(text, '"{base}": {for_each' if key == "feeds.{base}" else new.strip())
    assert f"{key} (line {at}" in found[0] and expected in found[0], message


def test_environment_overrides_members_and_one_members_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path)
    monkeypatch.setenv("MOODRING_WATCHLISTS__ALTS", '["ADA/USDT", "SOL/USDT"]')
    monkeypatch.setenv("MOODRING_FEEDS__SOL__STALE_AFTER", "10m")
    settings = load_settings(path)
    assert [f for f in settings.feeds if f not in ("btc", "rut")] == ["ada", "sol"]
    assert settings.feeds["sol"].stale_after == 600 and settings.feeds["ada"].stale_after == 300
    assert settings.feeds["sol"].symbol == "SOL/USDT"  # merged into the member's entry
    monkeypatch.setenv("MOODRING_FEEDS__SOL__STALE_AFTER", "soon")
    assert "feeds.sol.stale_after (MOODRING_FEEDS__SOL__STALE_AFTER from environment)" in (
        error_of(path)
    )


def test_show_config_shows_templates_as_written_or_expanded(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path))
    written = yaml.safe_load(show_config(settings))
    assert list(written["feeds"]) == ["btc", "rut", "{base}", "{base}_top"]
    assert written["series"]["{base}btc"] == {"for_each": "alts", "ratio": ["{base}", "btc"]}
    assert [r["name"] for r in written["rules"]] == [
        "{base}-decoupling",
        "sol-and-btc",
        "{base}-hot",
    ]
    assert written["watchlists"]["alts"] == {
        "members": ["SOL/USDT", "BNB/USDT", "XRP/USDT"],
        "exchange": "binance",
        "quote": "USDT",
    }
    again = write(tmp_path, show_config(settings), "shown.yaml")
    assert load_settings(again) == settings
    expanded = yaml.safe_load(show_config(settings, expanded=True))
    assert list(expanded["feeds"]) == list(settings.feeds)
    assert [r["name"] for r in expanded["rules"]] == [r.name for r in settings.rules]
    assert "for_each" not in str(expanded)


def test_silences_of_a_name_a_pattern_and_a_template(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path))
    silences = Silences(tmp_path / "silences.json", settings.template_of)
    silences.add("{base}-decoupling", 60, now=1000.0)
    assert silences.silenced("xrp-decoupling", now=1001.0) is not None
    assert silences.silenced("sol-and-btc", now=1001.0) is None
    silences.clear()
    silences.add("sol-*", 60, now=1000.0)
    assert silences.silenced("sol-and-btc", now=1001.0) is not None
    assert silences.silenced("sol-decoupling", now=1001.0) is not None
    assert silences.silenced("xrp-decoupling", now=1001.0) is None
    assert silences.silenced("sol-decoupling", now=1061.0) is None  # expired


def test_moodring_silence_takes_patterns_and_templates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, CONFIG + f"state_dir: {tmp_path / 'state'}\n")

    def silence(*argv: str) -> tuple[int, str]:
        code = main(["--log-level", "WARNING", "silence", "-c", str(path), *argv])
        out = capsys.readouterr()
        return code, out.out + out.err

    assert silence("sol-decoupling", "--for", "1h")[0] == 0
    code, out = silence("*-decoupling", "--for", "1h")
    assert code == 0 and "(sol-decoupling, bnb-decoupling, xrp-decoupling)" in out
    code, out = silence("--template", "bnb-decoupling", "--for", "2h")
    assert code == 0 and out.startswith("silenced {base}-decoupling (sol-decoupling, bnb-")
    code, out = silence("{base}-hot", "--for", "2h")  # a template of a watchlist not ranked yet
    assert code == 0 and "{base}-hot (no rule yet)" in out
    code, out = silence("--list")
    assert "{base}-decoupling (3 rule(s) now)" in out and "*-decoupling (3 rule(s) now)" in out
    assert silence("nope-*", "--for", "1h") == (
        1,
        "moodring: 'nope-*' matches no rule; rules: bnb-decoupling, sol-and-btc, "
        "sol-decoupling, stale.bnb, stale.btc, stale.rut, stale.sol, stale.xrp, "
        "xrp-decoupling\n",
    )
    code, out = silence("--template", "sol-and-btc", "--for", "1h")
    assert code == 1 and "'sol-and-btc' is not a rule of a watchlist's template" in out
    code, out = silence("--clear", "--template", "xrp-decoupling")
    assert out == "cleared 1 silence(s)\n"


def daily_bars(feed: str, path: Path) -> list[tuple[str, Bar]]:
    bars = load_csv(path).bars
    return [
        (feed, Bar(int(t), o, h, low, c, v))
        for t, o, h, low, c, v in zip(
            bars.time.tolist(),
            bars.open.tolist(),
            bars.high.tolist(),
            bars.low.tolist(),
            bars.close.tolist(),
            bars.volume.tolist(),
            strict=True,
        )
    ]


def test_snapshots_keep_the_expanded_rules_states(tmp_path: Path) -> None:
    text = """\
watchlists:
  alts: [ADA/USDT, XRP/USDT, LINK/USDT]
feeds:
  "{base}": {for_each: alts, symbol: "{symbol}"}
metrics:
  "{base}_mfi": {for_each: alts, type: mfi, series: "{base}", period: 14}
rules:
  - {name: "{base}-hot", for_each: alts, metric: "{base}_mfi", condition: {above: 60}}
"""
    settings = load_settings(write(tmp_path, text))
    engine = Pipeline(settings)
    fired: list[str] = []
    engine.rules.subscribe(lambda alert: fired.append(alert.rule))
    bars = [
        b for f in ("ada", "xrp", "link") for b in daily_bars(f, ALTS / f"{f.upper()}USDT_1d.csv")
    ]
    end = 1_735_689_600_000  # 2025-01-01
    for feed, bar in sorted((b for b in bars if b[1].time < end), key=lambda b: b[1].time):
        engine.on_candle(feed, bar.time, bar, closed=True, length_ms=86_400_000)
    assert {"ada-hot", "xrp-hot", "link-hot"} <= set(fired)
    states = {r.config.name: r.status for r in engine.rules.rules}
    save(tmp_path / "snapshot.npz", capture(engine))

    state = load(tmp_path / "snapshot.npz", settings, max_age_s=math.inf)
    assert state is not None and set(state.rules) == {"ada-hot", "xrp-hot", "link-hot"}
    again = Pipeline(settings)
    report = restore(again, state)
    assert set(report.rules.values()) == {"restored"}
    assert {r.config.name: r.status for r in again.rules.rules} == states

    # a reload without XRP and with DOT: the others keep their states, DOT starts afresh
    fewer = write(tmp_path, text.replace("XRP/USDT", "DOT/USDT"), "fewer.yaml")
    changed = Pipeline(load_settings(fewer))
    report = restore(changed, capture(engine))
    assert report.rules == {
        "ada-hot": "restored",
        "dot-hot": "fresh: not in the snapshot",
        "link-hot": "restored",
    }
    assert {r.config.name: r.status for r in changed.rules.rules if r.config.name != "dot-hot"} == {
        name: states[name] for name in ("ada-hot", "link-hot")
    }
