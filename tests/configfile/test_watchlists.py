"""Watchlists in the config: for_each expansion, placeholders, errors, overrides, show-config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moodring.configfile import ConfigError, load_settings, show_config, with_members
from moodring.expansion import fill
from moodring.settings import Member
from tests.support.watchlists import CONFIG, write

# no MOODRING_* variable, user or system config around
pytestmark = pytest.mark.usefixtures("isolated")


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
