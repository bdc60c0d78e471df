"""Altcoin Season Index: an independent pandas reference, real universes, live == backtest."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from moodring.backtest.csvfile import load_csv
from moodring.backtest.universe import UniverseCoin, coin_files, load_universe
from moodring.cli import main
from moodring.configfile import ConfigError, load_settings
from moodring.market.frame import BarFrame
from moodring.metrics.altseason import (
    DAY_MS,
    AltseasonIndex,
    AltseasonSeries,
    ExclusionRules,
    altseason_series,
    excluded,
)
from moodring.settings import AltseasonConfig
from tests.support.oracles import read_ohlcv
from tests.support.paths import DATA

ALTS = DATA / "daily/binance_alts"
ALTS_2022 = DATA / "daily/binance_alts_gnguyenquant"
BTC_1D = DATA / "daily/binance_yanniedog/BTCUSDT_1d.csv"
ETH_1D = DATA / "daily/binance_yanniedog/ETHUSDT_1d.csv"

Daily = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def day_ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


@pytest.fixture(scope="module")
def btc() -> BarFrame:
    return load_csv(BTC_1D).bars


@pytest.fixture(scope="module")
def alts() -> dict[str, UniverseCoin]:
    return load_universe([ALTS])


@pytest.fixture(scope="module")
def alts_2022() -> dict[str, UniverseCoin]:
    return load_universe([ALTS_2022])


def daily(coins: Mapping[str, UniverseCoin]) -> Daily:
    return {base: coin.daily() for base, coin in coins.items()}


def series(coins: Daily, btc: BarFrame, **options: int) -> AltseasonSeries:
    return altseason_series(coins, (btc.time, btc.close), **options)


# --------------------------------------------------------------------------- pandas reference


def reference(
    files: Mapping[str, Path], btc_path: Path, *, top: int, days: int = 90, volume_days: int = 30
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The definition, literally, in pandas: (index/members/skipped per BTC day, member mask)."""
    frames = {base: read_ohlcv(path) for base, path in sorted(files.items())}
    btc = read_ohlcv(btc_path)["close"]
    first = min([btc.index[0], *(f.index[0] for f in frames.values())])
    last = max([btc.index[-1], *(f.index[-1] for f in frames.values())])
    calendar = pd.date_range(first, last, freq="D")
    close = pd.DataFrame({b: f["close"] for b, f in frames.items()}).reindex(calendar)
    volume = pd.DataFrame({b: f["volume"] for b, f in frames.items()}).reindex(calendar)
    then = close.shift(freq=pd.Timedelta(days=days)).reindex(calendar)
    perf = close / then - 1
    btc_then = btc.shift(freq=pd.Timedelta(days=days)).reindex(calendar)
    btc_perf = btc.reindex(calendar) / btc_then - 1
    quote = (close * volume).fillna(0.0).rolling(f"{volume_days}D").sum()
    rank = quote.where(perf.notna()).rank(axis=1, ascending=False, method="first")
    member = rank <= top
    beats = (perf.gt(btc_perf, axis=0) & member).sum(axis=1)
    count = member.sum(axis=1)
    index = (100 * beats / count).where((count > 0) & btc_perf.notna())
    seen = close.notna().astype(float).rolling(f"{days + 1}D").sum() > 0
    skipped = (seen & perf.isna()).sum(axis=1)
    table = pd.DataFrame({"index": index, "members": count, "skipped": skipped})
    return table.loc[btc.index], member.loc[btc.index]


def assert_matches_reference(
    ours: AltseasonSeries, ref: pd.DataFrame, member: pd.DataFrame
) -> None:
    np.testing.assert_array_equal(ours.times, ref.index.as_unit("ms").asi8)
    np.testing.assert_array_equal(ours.index, ref["index"].to_numpy())
    np.testing.assert_array_equal(ours.members, ref["members"].to_numpy())
    np.testing.assert_array_equal(ours.skipped, ref["skipped"].to_numpy())
    columns = np.array(member.columns)
    for row, mask in enumerate(member.to_numpy()):
        assert sorted(ours.members_at(row)) == sorted(columns[mask]), ref.index[row]


UNIVERSES = {
    "alts": [ALTS],
    "alts_2022": [ALTS_2022],
    "top50_2022": [ALTS_2022, ALTS / "SHIBUSDT_1d.csv", ETH_1D],  # the README's 51 coins
}


@pytest.mark.parametrize(
    ("name", "top"),
    [("alts", 50), ("alts", 5), ("alts_2022", 50), ("alts_2022", 10), ("top50_2022", 50)],
)
def test_equals_an_independent_pandas_computation_every_day(
    name: str, top: int, btc: BarFrame
) -> None:
    paths = UNIVERSES[name]
    files: dict[str, Path] = {}
    for path in paths:
        files |= coin_files(path)
    coins = load_universe(paths)
    assert set(coins) == set(files)
    ours = series(daily(coins), btc, top=top)
    ref, member = reference(files, BTC_1D, top=top)
    assert_matches_reference(ours, ref, member)
    assert np.count_nonzero(~np.isnan(ours.index)) > 1000
    if top < len(coins) - 1:  # the universe is capped at top: the ranking must have mattered
        assert (ours.members == top).sum() > 300


def test_top50_universe_matches_the_known_seasons(btc: BarFrame) -> None:
    ours = series(daily(load_universe(UNIVERSES["top50_2022"])), btc)
    at = {str(pd.Timestamp(t, unit="ms").date()): i for i, t in enumerate(ours.times)}
    assert ours.members[at["2022-06-30"]] == 50  # 51 coins with history: one left out by volume
    assert all(ours.index[at[d]] >= 90 for d in ("2021-04-15", "2021-05-01"))
    assert all(ours.index[at[d]] <= 25 for d in ("2019-07-15", "2021-01-10"))


def test_settings_change_the_horizon_and_volume_window(btc: BarFrame) -> None:
    files = coin_files(ALTS_2022)
    ours = series(daily(load_universe([ALTS_2022])), btc, top=7, days=30, volume_days=7)
    assert_matches_reference(ours, *reference(files, BTC_1D, top=7, days=30, volume_days=7))


# ------------------------------------------------------------- listings, delistings, gaps


def test_a_late_listed_coin_is_skipped_until_it_has_90_days(
    alts: dict[str, UniverseCoin], btc: BarFrame
) -> None:
    full = series(daily(alts), btc)
    without = series({b: c for b, c in daily(alts).items() if b != "SHIB"}, btc)
    listed, aged = day_ms("2021-05-10"), day_ms("2021-08-08")
    assert int(alts["SHIB"].bars.time[0]) == listed
    extra = full.skipped - without.skipped
    inside = (full.times >= listed) & (full.times < aged)
    assert (extra[inside] == 1).all() and (extra[~inside] == 0).all()
    has_shib = np.array(["SHIB" in full.members_at(i) for i in range(len(full.times))])
    np.testing.assert_array_equal(has_shib, full.times >= aged)


def test_a_delisted_coin_leaves_once_it_lacks_the_bar(
    alts: dict[str, UniverseCoin], btc: BarFrame
) -> None:
    full = series(daily(alts), btc)
    without = series({b: c for b, c in daily(alts).items() if b != "MATIC"}, btc)
    last = day_ms("2024-09-10")
    assert int(alts["MATIC"].bars.time[-1]) == last
    has = np.array(["MATIC" in full.members_at(i) for i in range(len(full.times))])
    assert has[full.times == last].all() and not has[full.times > last].any()
    aged = int(alts["MATIC"].bars.time[0]) + 90 * DAY_MS
    assert has[(full.times >= aged) & (full.times <= last)].all()
    extra = full.skipped - without.skipped
    gone = (full.times > last) & (full.times <= last + 90 * DAY_MS)
    assert (extra[gone] == 1).all() and (extra[full.times > last + 90 * DAY_MS] == 0).all()


def cut_file(source: Path, target: Path, first: str, last: str) -> Path:
    """Copy a real yanniedog-format file without the rows dated first..last."""
    lines = source.read_text().splitlines()
    kept = [ln for ln in lines[1:] if not first <= ln.split(",")[0] <= last]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join([lines[0], *kept]) + "\n")
    return target


def test_gaps_are_calendar_days_not_rows(tmp_path: Path, btc: BarFrame) -> None:
    folder = tmp_path / "gappy"
    for name in ("XRPUSDT_1d.csv", "LTCUSDT_1d.csv", "TRXUSDT_1d.csv"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes((ALTS / name).read_bytes())
    cut_file(ALTS / "ADAUSDT_1d.csv", folder / "ADAUSDT_1d.csv", "2020-03-01", "2020-03-10")
    coins = load_universe([folder])
    ours = series(daily(coins), btc)
    assert_matches_reference(ours, *reference(coin_files(folder), BTC_1D, top=50))
    has_ada = np.array(["ADA" in ours.members_at(i) for i in range(len(ours.times))])
    gap = (ours.times >= day_ms("2020-03-01")) & (ours.times <= day_ms("2020-03-10"))
    echo = (ours.times >= day_ms("2020-05-30")) & (ours.times <= day_ms("2020-06-08"))
    around = (ours.times >= day_ms("2019-01-01")) & (ours.times <= day_ms("2021-01-01"))
    assert not has_ada[gap | echo].any()
    assert has_ada[around & ~gap & ~echo].all()
    live_equals_series(coins, btc, ours, top=50)


# --------------------------------------------------------------------------- exclusions


@pytest.mark.parametrize(
    ("base", "reason"),
    [
        ("BTC", "benchmark"),
        ("btc", "benchmark"),
        ("USDT", "stablecoin"),
        ("USDC", "stablecoin"),
        ("BUSD", "stablecoin"),
        ("TUSD", "stablecoin"),
        ("DAI", "stablecoin"),
        ("FDUSD", "stablecoin"),
        ("USDP", "stablecoin"),
        ("PAX", "stablecoin"),
        ("UST", "stablecoin"),
        ("USTC", "stablecoin"),
        ("GUSD", "stablecoin"),
        ("EUR", "stablecoin"),
        ("usdc", "stablecoin"),
        ("WBTC", "wrapped"),
        ("WETH", "wrapped"),
        ("WBETH", "wrapped"),
        ("BETH", "wrapped"),
        ("PAXG", "wrapped"),
        ("BTCUP", "leveraged"),
        ("BTCDOWN", "leveraged"),
        ("ETHUP", "leveraged"),
        ("1INCHDOWN", "leveraged"),
        ("SUSHIUP", "leveraged"),
        ("BULL", "leveraged"),
        ("BEAR", "leveraged"),
        ("ETHBULL", "leveraged"),
        ("BNBBEAR", "leveraged"),
        ("BTC3L", "leveraged"),
        ("ETH3S", "leveraged"),
        ("XRP2L", "leveraged"),
        ("DOGE5S", "leveraged"),
        ("JUP", None),
        ("SUPER", None),
        ("SYRUP", None),
        ("UP", None),
        ("PUP", None),
        ("PITBULL", None),
        ("SUN", None),
        ("ETH", None),
        ("1INCH", None),
        ("API3", None),
        ("C98", None),
        ("USUAL", None),
        ("DOWNUP", None),
        ("BTTC", None),
        ("SHIB", None),
    ],
)
def test_default_exclusions(base: str, reason: str | None) -> None:
    got = excluded(base)
    assert got is None if reason is None else (got is not None and reason in got), got


def test_exclusion_overrides() -> None:
    rules = ExclusionRules.of(exclude=["ada", "jup"], include=["paxg", "BTCUP", "ada"])
    assert excluded("ADA", rules) == "excluded by config"  # exclude wins
    assert excluded("JUP", rules) == "excluded by config"
    assert excluded("PAXG", rules) is None and excluded("BTCUP", rules) is None
    assert excluded("BTC", ExclusionRules.of(include=["BTC"])) == "BTC is the benchmark"
    assert excluded("WETH", rules) is not None


def test_no_real_universe_coin_is_excluded() -> None:
    for folder in (ALTS, ALTS_2022):
        assert [b for b in coin_files(folder) if excluded(b)] == []


def test_exclusions_apply_to_the_series(alts: dict[str, UniverseCoin], btc: BarFrame) -> None:
    coins = daily(alts)
    base = series(coins, btc)
    polluted = coins | {
        "BTC": (btc.time, btc.close, btc.volume),
        "USDC": coins["XRP"],
        "ETHUP": coins["ADA"],
    }
    same = series(polluted, btc)
    assert same.symbols == base.symbols
    np.testing.assert_array_equal(same.index, base.index)
    dropped = altseason_series(coins, (btc.time, btc.close), rules=ExclusionRules.of(["XRP"]))
    assert "XRP" not in dropped.symbols
    assert not np.array_equal(dropped.index, base.index, equal_nan=True)


def test_altseason_config() -> None:
    config = AltseasonConfig(exclude=[" ada", "Jup"], include=["paxg"], refresh="6h")
    assert config.rules() == ExclusionRules(frozenset({"ADA", "JUP"}), frozenset({"PAXG"}))
    assert (config.top, config.days, config.volume_days, config.refresh) == (50, 90, 30, 21600.0)
    assert (config.exchange, config.quote, config.btc) == ("binance", "USDT", "BTC/USDT")
    with pytest.raises(ValueError, match="both excluded and included"):
        AltseasonConfig(exclude=["ADA"], include=["ada"])
    with pytest.raises(ValueError, match="benchmark"):
        AltseasonConfig(include=["BTC"])
    with pytest.raises(ValueError):
        AltseasonConfig(top=0)


def rule_config(tmp_path: Path, *, section: dict | None, metric: str) -> Path:
    config = {
        "feeds": {"btc": {"symbol": "BTC/USDT"}},
        "rules": [
            {
                "name": "alt",
                "metric": metric,
                "condition": {"above": 75},
                "message": "{{ altseason_index }} of {{ altseason_members }}",
            }
        ],
    }
    if section is not None:
        config["altseason"] = section
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_rules_may_use_the_index_only_with_the_section(tmp_path: Path) -> None:
    for metric in ("altseason_index", "altseason_members"):
        settings = load_settings(rule_config(tmp_path, section={"top": 20}, metric=metric))
        assert settings.altseason is not None and settings.altseason.top == 20
        assert settings.altseason_columns() == ("altseason_index", "altseason_members")
    with pytest.raises(ConfigError, match="altseason_index"):
        load_settings(rule_config(tmp_path, section=None, metric="altseason_index"))
    with pytest.raises(ConfigError, match="altseason_skipped"):
        load_settings(rule_config(tmp_path, section={}, metric="altseason_skipped"))


# --------------------------------------------------------------------------- no look-ahead


def test_no_look_ahead(alts_2022: dict[str, UniverseCoin], btc: BarFrame) -> None:
    coins = daily(alts_2022)
    full = series(coins, btc, top=10)
    rows = [
        *range(400, len(full.times), 97),
        int(np.searchsorted(full.times, day_ms("2022-06-30"))),
    ]
    for row in rows:
        end = int(full.times[row])
        cut = {b: tuple(a[t <= end] for a in (t, c, v)) for b, (t, c, v) in coins.items()}
        cut = {b: x for b, x in cut.items() if x[0].size}
        part = series(cut, btc.between(None, end + 1), top=10)
        assert part.times[-1] == end
        np.testing.assert_array_equal(part.index[-1], full.index[row])
        assert part.members_at(len(part.times) - 1) == full.members_at(row)
        assert part.skipped[-1] == full.skipped[row]


# --------------------------------------------------------------------------- live == backtest


def by_day(coins: Mapping[str, UniverseCoin]) -> dict[int, dict[str, tuple[float, float]]]:
    days: dict[int, dict[str, tuple[float, float]]] = {}
    for base, coin in coins.items():
        bars = coin.bars
        for t, c, v in zip(
            bars.time.tolist(), bars.close.tolist(), bars.volume.tolist(), strict=True
        ):
            days.setdefault(t, {})[base] = (c, v)
    return days


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def live_equals_series(
    coins: Mapping[str, UniverseCoin], btc: BarFrame, expected: AltseasonSeries, top: int
) -> None:
    live = AltseasonIndex(top=top)
    days = by_day(coins)
    for row, (t, close) in enumerate(zip(btc.time.tolist(), btc.close.tolist(), strict=True)):
        value = live.update_day(t, days.get(t, {}), close)
        assert value.time == expected.times[row]
        assert same(value.index, expected.index[row]), (row, value.index, expected.index[row])
        assert value.members == expected.members_at(row), row
        assert value.skipped == expected.skipped[row], row
    assert live.value is value


@pytest.mark.parametrize(
    ("name", "top"), [("alts", 50), ("alts", 5), ("alts_2022", 10), ("top50_2022", 50)]
)
def test_live_equals_the_series_day_by_day(name: str, top: int, btc: BarFrame) -> None:
    coins = load_universe(UNIVERSES[name])
    live_equals_series(coins, btc, series(daily(coins), btc, top=top), top)


def test_peek_equals_the_series_with_the_last_day_replaced(
    alts_2022: dict[str, UniverseCoin], btc: BarFrame
) -> None:
    coins = daily(alts_2022)
    days = by_day(alts_2022)
    live = AltseasonIndex(top=10)
    checked = 0
    for row, (t, close) in enumerate(zip(btc.time.tolist(), btc.close.tolist(), strict=True)):
        today = days.get(t, {})
        if row % 23 == 0 and row > 100 and today:
            # Intraday: highs as prices, a third of the volume, one coin not yet traded.
            missing = sorted(today)[row % len(today)]
            high = {
                b: float(c.bars.high[c.bars.time == t][0])
                for b, c in alts_2022.items()
                if b in today and b != missing
            }
            volume = {b: today[b][1] / 3 for b in high}
            btc_high = float(btc.high[row])
            peeked = live.peek(high, btc_high, volumes=volume)
            replaced = {}
            for b, (ts, c, v) in coins.items():
                keep = ts < t
                ts, c, v = ts[keep], c[keep], v[keep]
                if b in high:
                    ts, c, v = np.r_[ts, t], np.r_[c, high[b]], np.r_[v, volume[b]]
                replaced[b] = (ts, c, v)
            bt = btc.between(None, t)
            expected = altseason_series(
                replaced, (np.r_[bt.time, t], np.r_[bt.close, btc_high]), top=10
            )
            assert peeked.time == t == expected.times[-1]
            assert same(peeked.index, expected.index[-1]), (row, peeked, expected.index[-1])
            assert peeked.members == expected.members_at(len(expected.times) - 1)
            assert peeked.skipped == expected.skipped[-1]
            checked += 1
        live.update_day(t, today, close)  # peeking changed nothing: still equal afterwards
    assert checked > 40
    full = series(coins, btc, top=10)
    assert same(live.value.index, full.index[-1])


def test_peek_differs_from_the_close_and_live_rejects_bad_order() -> None:
    live = AltseasonIndex(top=2, days=2, volume_days=2)
    with pytest.raises(ValueError):
        live.peek({"ADA": 1.0}, 100.0)
    d = DAY_MS
    live.update_day(0, {"ADA": (1.0, 10.0), "XRP": (1.0, 5.0), "DOT": (1.0, 1.0)}, 100.0)
    live.update_day(d, {"ADA": (1.0, 10.0), "XRP": (1.0, 5.0), "DOT": (1.0, 1.0)}, 100.0)
    v = live.update_day(2 * d, {"ADA": (2.0, 10.0), "XRP": (0.5, 5.0), "DOT": (9.0, 0.1)}, 150.0)
    assert (v.index, v.members, v.skipped) == (50.0, ("ADA", "XRP"), 0)
    assert v.season is None
    p = live.peek({"ADA": 3.0, "XRP": 2.0, "NEW": 1.0}, 100.0, volumes={"XRP": 100.0})
    assert (p.index, p.members, p.skipped, p.time) == (100.0, ("XRP", "ADA"), 2, 3 * d)
    assert p.season == "altcoin season"
    with pytest.raises(ValueError):
        live.update_day(2 * d, {}, 100.0)
    with pytest.raises(ValueError):
        live.peek({}, 100.0, day_ms=2 * d)


# --------------------------------------------------------------------------- speed


def test_fast_enough(btc: BarFrame, capsys: pytest.CaptureFixture[str]) -> None:
    coins = daily(load_universe(UNIVERSES["top50_2022"]))
    start = time.perf_counter()
    result = series(coins, btc)
    full = time.perf_counter() - start
    end = day_ms("2022-06-30")
    short = {
        b: tuple(a[(t > end - 90 * DAY_MS) & (t <= end)] for a in (t, c, v))
        for b, (t, c, v) in coins.items()
    }
    bt = btc.between(end - 89 * DAY_MS, end + 1)
    start = time.perf_counter()
    series(short, bt)
    window = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\naltseason_series: {len(coins)} coins x {len(result.times)} days {full:.4f}s, "
            f"{len(short)} coins x {len(bt)} days {window:.4f}s"
        )
    assert full < 1.0


# --------------------------------------------------------------------------- CLI


def write_config(tmp_path: Path, section: dict | None) -> Path:
    config: dict = {"feeds": {"btc": {"symbol": "BTC/USDT"}, "eth": {"symbol": "ETH/USDT"}}}
    if section is not None:
        config["altseason"] = section
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path)
    table.index = pd.to_datetime(table.pop("time"), utc=True)
    return table


def test_cli_universe_writes_the_columns(tmp_path: Path, btc: BarFrame) -> None:
    out = tmp_path / "m.csv"
    config = write_config(tmp_path, {"top": 5})
    args = ["backtest", "-c", str(config), "--data", f"btc={BTC_1D}", "--universe", str(ALTS)]
    assert main([*args, "--metrics-out", str(out)]) == 0
    table = read(out)
    assert list(table.columns) == ["altseason_index", "altseason_members", "altseason_skipped"]
    expected = series(daily(load_universe([ALTS])), btc, top=5)
    np.testing.assert_array_equal(table.index.as_unit("ms").asi8, expected.times)
    np.testing.assert_array_equal(table["altseason_index"].to_numpy(), expected.index)
    np.testing.assert_array_equal(table["altseason_members"].to_numpy(), expected.members)
    np.testing.assert_array_equal(table["altseason_skipped"].to_numpy(), expected.skipped)
    assert table["altseason_members"].max() == 5


def test_cli_joins_the_index_with_the_other_metrics(tmp_path: Path, btc: BarFrame) -> None:
    out, plain = tmp_path / "m.csv", tmp_path / "plain.csv"
    data = ["--data", f"eth={ETH_1D}", "--data", f"btc={BTC_1D}", "--from", "2021-01-01"]
    assert main(["backtest", *data, "--metrics-out", str(plain)]) == 0
    assert main(["backtest", *data, "--universe", str(ALTS), "--metrics-out", str(out)]) == 0
    table, before = read(out), read(plain)
    assert list(table.columns) == [
        *before.columns,
        "altseason_index",
        "altseason_members",
        "altseason_skipped",
    ]
    pd.testing.assert_frame_equal(table[before.columns], before)
    expected = series(daily(load_universe([ALTS])), btc)
    rows = expected.times >= day_ms("2021-01-01")
    np.testing.assert_array_equal(table["altseason_index"].to_numpy(), expected.index[rows])


def test_cli_bad_universe_file_names_file_and_line(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "alts"
    folder.mkdir()
    lines = (ALTS / "ADAUSDT_1d.csv").read_text().splitlines()
    lines[40] = lines[40].replace(lines[40].split(",")[4], "oops")
    (folder / "ADAUSDT_1d.csv").write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path, {})
    args = ["backtest", "-c", str(config), "--data", f"btc={BTC_1D}", "--universe", str(folder)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'ADAUSDT_1d.csv'}:41:" in err and "oops" in err


@pytest.mark.parametrize(
    ("section", "extra", "message"),
    [
        ({}, ["--data", f"eth={ETH_1D}"], "needs BTC's history"),
        ({"btc": "XBT/USD"}, ["--data", f"btc={BTC_1D}"], "XBT/USD"),
        ({}, ["--data", f"btc={BTC_1D}", "--universe", "/nonexistent"], "no such folder"),
    ],
)
def test_cli_universe_usage_errors(
    tmp_path: Path, section: dict, extra: list[str], message: str, capsys
) -> None:
    config = write_config(tmp_path, section)
    universe = [] if "--universe" in extra else ["--universe", str(ALTS)]
    assert main(["backtest", "-c", str(config), *universe, *extra]) == 1
    assert message in capsys.readouterr().err
