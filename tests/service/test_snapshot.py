"""Engine snapshots on real data: exact round trips, rule states, bad files, reloads."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import math
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from moodring.configfile import load_settings
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert
from moodring.service import snapshot
from moodring.service.pipeline_sink import PipelineSink
from moodring.service.snapshot import (
    EngineState,
    Snapshotter,
    attach,
    capture,
    load,
    restore,
    save,
)
from moodring.settings import Condition, Settings
from tests.support import oracles
from tests.support.daily_replay import (
    DAY,
    REAL,
    START,
    TRADE_DAY,
    bars_between,
    day_trades,
    live,
    settings_with,
    started,
    status,
)


def restored(state: EngineState, settings: Settings, **kw: bool) -> tuple[Pipeline, list[Alert]]:
    engine = Pipeline(settings)
    alerts: list[Alert] = []
    engine.rules.subscribe(alerts.append)
    restore(engine, state, **kw)
    return engine, alerts


def assert_same(got: Mapping[str, float], want: Mapping[str, float]) -> None:
    """Equal bit for bit, NaN equal to NaN."""
    assert got.keys() == want.keys()
    differ = {
        k: (got[k], want[k])
        for k in want
        if not (got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])))
    }
    assert not differ


@pytest.fixture(scope="module")
def ran() -> tuple[Settings, EngineState]:
    """The shipped config (plus EXTRA_METRICS) run to TRADE_DAY, and its snapshot."""
    settings = settings_with()
    engine, _ = started(settings)
    live(engine, START, TRADE_DAY)
    return settings, capture(engine)


def test_round_trip_gives_the_same_engine_and_the_same_future(tmp_path: Path) -> None:
    settings = settings_with()
    a, alerts_a = started(settings)
    live(a, START, TRADE_DAY)
    live(a, TRADE_DAY, TRADE_DAY + DAY, ["rut"])  # the session closed before the capture
    trades = day_trades()
    cut = len(trades) // 2
    for trade in trades[:cut]:
        a.on_trade(*trade)
    path = tmp_path / "engine.snapshot"
    save(path, capture(a))
    state = load(path, settings, max_age_s=60)
    assert state is not None

    b, alerts_b = restored(state, settings)
    assert alerts_b == []  # the replay is quiet
    assert_same(b.values(), a.values())
    assert_same(b.peek_values(), a.peek_values())
    assert b.last_prices() == a.last_prices()
    assert b.rules.statuses() == a.rules.statuses()

    before = len(alerts_a)
    for i, trade in enumerate(trades[cut:]):
        a.on_trade(*trade)
        b.on_trade(*trade)
        if i % 97 == 0:
            assert_same(b.peek_values(), a.peek_values())
    for engine in (a, b):
        engine.advance(TRADE_DAY + DAY)
    for feed, bar in bars_between(TRADE_DAY + DAY, TRADE_DAY + 200 * DAY):
        for engine in (a, b):
            engine.on_candle(feed, bar.time, bar, closed=True, length_ms=DAY)
        assert_same(b.values(), a.values())
    assert len(alerts_a) > before
    assert alerts_b == alerts_a[before:]


def test_rings_alone_would_not_restore_the_metrics() -> None:
    """Why the journal: an EMA depends on more bars than its ring keeps."""
    settings, column = settings_with(), "btc_cross.spread"
    a, _ = started(settings, keep_bars=1)  # a journal no longer than the rings
    live(a, START, TRADE_DAY)
    b, _ = restored(capture(a), settings)
    assert not math.isnan(a.values()[column])
    assert b.values()[column] != a.values()[column]


def test_a_journal_keeps_what_a_warm_up_fetches_and_restores_alike() -> None:
    """The daemon's journal: an exchange feed's as long as its REST warm-up, no longer."""
    settings = settings_with()
    a, _ = started(settings, keep_bars=None)
    live(a, START, TRADE_DAY)
    state = capture(a)
    kept = {s.feed: len(s.time) for s in state.series}
    rings = {feed: a.builders(feed)[0].bars.time.capacity for feed in settings.feeds}
    # 600 days lived: ETH and BTC (Binance) keep a ring-full and one; the RUT (Yahoo's
    # chart range) every bar it has seen
    sessions = len(bars_between(START, TRADE_DAY, ["rut"]))
    rut = rings["rut"] + sessions
    assert kept == {"eth": rings["eth"] + 1, "btc": rings["btc"] + 1, "rut": rut}
    b, _ = restored(state, settings)
    # windowed metrics and an EMA(20) started 241 bars back: equal to rounding; only BTC's
    # EMA(30) over its 92 bars is the value a restart's warm-up would give it
    want, got = a.values(), b.values()
    differ = {
        c: (got[c], want[c])
        for c in want
        if not c.startswith("btc_cross")
        and not math.isclose(got[c], want[c], rel_tol=1e-9, abs_tol=1e-12)
        and not (math.isnan(got[c]) and math.isnan(want[c]))
    }
    assert not differ
    assert b.rules.statuses() == a.rules.statuses()


REPEAT = {
    "name": "eth-above-1000",
    "metric": "eth_ema",
    "condition": {"above": 1000},
    "repeat_interval": "7d",
}


def test_a_firing_rule_repeats_on_its_own_schedule_after_restore() -> None:
    settings = settings_with(REPEAT)
    # a journal shorter than the engine's life: the replay alone cannot know the schedule
    a, alerts_a = started(settings, keep_bars=300)
    live(a, START, TRADE_DAY)
    firing = dataclasses.replace(status(a, "eth-above-1000"))
    assert firing.state == "firing" and firing.notified_at is not None
    state = capture(a)
    b, alerts_b = restored(state, settings)
    c, alerts_c = restored(dataclasses.replace(state, rules={}), settings)
    assert status(b, "eth-above-1000") == firing
    assert status(c, "eth-above-1000").notified_at != firing.notified_at

    before = len(alerts_a)
    for engine in (a, b, c):
        live(engine, TRADE_DAY, TRADE_DAY + 40 * DAY)

    def repeats(alerts: list[Alert]) -> list[int]:
        return [x.time for x in alerts if x.rule == "eth-above-1000" and x.state == "firing"]

    expected = [firing.notified_at + k * 7 * DAY for k in range(1, 6)]
    assert repeats(alerts_a[before:]) == expected
    assert repeats(alerts_b) == expected
    assert repeats(alerts_c) != expected


def test_a_tick_alert_sent_before_the_snapshot_is_not_sent_again() -> None:
    trades = day_trades()
    eth = [i for i, t in enumerate(trades) if t[0] == "eth"]
    cut = eth[100]
    probe, _ = started(settings_with())
    live(probe, START, TRADE_DAY)
    for trade in trades[:cut]:
        probe.on_trade(*trade)
    closed, forming = probe.values()["eth_ema"], probe.peek_values()["eth_ema"]
    operator = "below" if forming < closed else "above"
    rule = {
        "name": "eth-ema-tick",
        "metric": "eth_ema",
        "on": "tick",
        "condition": {operator: (closed + forming) / 2},
    }
    settings = settings_with(rule)

    a, alerts_a = started(settings)
    live(a, START, TRADE_DAY)
    for trade in trades[:cut]:
        a.on_trade(*trade)
    assert [(x.rule, x.time) for x in alerts_a if x.rule == "eth-ema-tick"] == [
        ("eth-ema-tick", TRADE_DAY)
    ]
    state = capture(a)
    b, alerts_b = restored(state, settings)
    c, alerts_c = restored(dataclasses.replace(state, rules={}), settings)
    before = len(alerts_a)
    for trade in trades[cut:]:
        for engine in (a, b, c):
            engine.on_trade(*trade)
    assert alerts_a[before:] == alerts_b == []
    # without the rule's status, the same alert would go out a second time
    assert [(x.rule, x.time) for x in alerts_c] == [("eth-ema-tick", TRADE_DAY)]


def test_a_restart_resumes_from_the_snapshot_and_gap_fills_from_its_last_bar() -> None:
    settings = settings_with()
    a, _ = started(settings)
    live(a, START, TRADE_DAY)
    state = capture(a)
    live(a, TRADE_DAY, TRADE_DAY + 10 * DAY)  # the daemon was down for these

    b, alerts_b = restored(state, settings, forming_bars=False)
    sink = PipelineSink(b)
    for feed in settings.feeds:
        last = b.builders(feed)[0].bars.last()
        assert last is not None
        gap = [bar for f, bar in bars_between(last.time + 1, TRADE_DAY + 10 * DAY) if f == feed]
        sink.history(feed, gap, length_ms=DAY)
    assert_same(b.values(), a.values())
    assert alerts_b == []


def test_restore_reports_the_last_bar_and_the_forming_bars() -> None:
    settings = settings_with()
    a, _ = started(settings)
    live(a, START, TRADE_DAY)
    for trade in day_trades()[:500]:
        a.on_trade(*trade)
    state = capture(a)
    b = Pipeline(settings)
    report = restore(b, state, forming_bars=False)
    rows = {(s.feed, s.timeframe): s for s in report.series}
    assert rows.keys() == {("eth", "1d"), ("btc", "1d"), ("rut", "1d")}
    assert report.warm_up() == []
    assert report.last_closed("eth", "1d") == TRADE_DAY - DAY
    assert report.last_closed("rut", "1d") == TRADE_DAY - DAY
    assert not any(s.forming for s in report.series)
    assert all(builder.forming() is None for f in settings.feeds for builder in b.builders(f))
    assert rows["btc", "1d"].needed == 91 and rows["btc", "1d"].restored == 91 + 600
    c = Pipeline(settings)
    report = restore(c, state)
    assert [s.forming for s in report.series] == [True, True, False]
    # after a restart the exchange's candle of that bar (a gap-fill) holds all of it
    candle = next(bar for f, bar in bars_between(TRADE_DAY, TRADE_DAY + DAY) if f == "eth")
    c.on_candle("eth", TRADE_DAY, candle, closed=True, length_ms=DAY)
    assert c.builders("eth")[0].bars.last() == candle


def test_restore_needs_a_fresh_engine(ran: tuple[Settings, EngineState]) -> None:
    settings, state = ran
    engine = Pipeline(settings)
    live(engine, TRADE_DAY, TRADE_DAY + 2 * DAY)
    with pytest.raises(ValueError, match="fresh engine"):
        restore(engine, state)


# --- files


def test_a_failed_write_leaves_the_previous_snapshot(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ran: tuple[Settings, EngineState],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, state = ran
    path = tmp_path / "engine.snapshot"
    save(path, state)
    newer = dataclasses.replace(state, taken_ms=state.taken_ms + 1000)

    def crash(*args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(snapshot.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        save(path, newer)
    assert not Snapshotter(lambda: Pipeline(settings), path).save_now()
    assert "not written: power cut" in caplog.text
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["engine.snapshot"]  # no temp files left
    loaded = load(path, settings, max_age_s=math.inf)
    assert loaded is not None and loaded.taken_ms == state.taken_ms


def rewrite_meta(path: Path, change: dict) -> None:
    with np.load(path) as npz:
        arrays = dict(npz)
    meta = json.loads(arrays["meta"].tobytes()) | change
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with path.open("wb") as out:  # np.savez would add .npz to a bare path
        np.savez(out, **arrays)


def damage(path: Path, case: str) -> None:
    data = path.read_bytes()
    if case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "bit flipped":
        i = data.index(b"time.npy") + 500  # inside the bar times
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :])
    elif case == "not a snapshot":
        path.write_text("feeds: {}\n")
    elif case == "pickle":
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        path.write_bytes(pickle.dumps(buffer.getvalue()))
    elif case == "bad status":
        rewrite_meta(
            path,
            {
                "rules": {
                    "x": {
                        "metric": "m",
                        "kind": "level",
                        "on": "close",
                        "status": {"state": "exploded"},
                    }
                }
            },
        )
    elif case == "counts":
        meta = json.loads(np.load(path)["meta"].tobytes())
        meta["series"][0]["count"] += 1
        rewrite_meta(path, meta)


@pytest.mark.parametrize(
    "case", ["truncated", "bit flipped", "not a snapshot", "pickle", "bad status", "counts"]
)
def test_a_corrupt_snapshot_loads_as_none_with_a_warning(
    tmp_path: Path,
    ran: tuple[Settings, EngineState],
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    settings, state = ran
    path = tmp_path / "engine.snapshot"
    save(path, state)
    damage(path, case)
    with caplog.at_level(logging.INFO, "moodring.snapshot"):
        assert load(path, settings, max_age_s=math.inf) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "unreadable" in caplog.text


@pytest.mark.parametrize("case", ["missing", "too old", "other feeds", "newer format"])
def test_an_unusable_snapshot_loads_as_none_saying_why(
    tmp_path: Path,
    ran: tuple[Settings, EngineState],
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    settings, state = ran
    path = tmp_path / "engine.snapshot"
    now = state.taken_ms + 10_000
    if case != "missing":
        save(path, state)
    if case == "too old":
        now = state.taken_ms + 7_200_000
    elif case == "other feeds":
        feeds = {
            name: f.model_copy(update={"exchange": "kraken"}) for name, f in settings.feeds.items()
        }
        settings = settings.model_copy(update={"feeds": feeds})
    elif case == "newer format":
        rewrite_meta(path, {"version": snapshot.SNAPSHOT_VERSION + 1})
    with caplog.at_level(logging.INFO, "moodring.snapshot"):
        assert load(path, settings, max_age_s=3600, now_ms=now) is None
    assert [r.levelname for r in caplog.records] == ["INFO"]
    expected = {
        "missing": "no snapshot",
        "too old": "2h old",
        "other feeds": "other feeds",
        "newer format": "format version",
    }
    assert expected[case] in caplog.text
    if case in ("too old", "other feeds"):  # the same file is fine for its own config, in time
        assert load(path, ran[0], max_age_s=3600, now_ms=state.taken_ms + 10_000) is not None


async def test_snapshotter_saves_periodically_and_at_shutdown(tmp_path: Path) -> None:
    settings = settings_with()
    engine, _ = started(settings)
    live(engine, START, START + 30 * DAY)
    path = tmp_path / "engine.snapshot"
    snapshots = Snapshotter(lambda: engine, path)
    task = asyncio.create_task(snapshots.run(0.01))
    for _ in range(500):
        if path.exists():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    periodic = load(path, settings, max_age_s=60)
    assert periodic is not None

    stale = snapshots._capture()  # a periodic capture whose write is still to come
    live(engine, START + 30 * DAY, START + 40 * DAY)
    assert snapshots.save_now()
    assert not snapshots._write(*stale)  # an older state never replaces a newer one
    final = load(path, settings, max_age_s=60)
    assert final is not None
    last = {s.feed: int(s.time[-1]) for s in final.series}
    assert last["eth"] == START + 39 * DAY


# --- reloads


def changed_rule(settings: Settings, rule: str, /, **update: object) -> Settings:
    rules = tuple(r.model_copy(update=update) if r.name == rule else r for r in settings.rules)
    return settings.model_copy(update={"rules": rules})


def test_reload_keeps_rule_states_when_only_thresholds_change(
    ran: tuple[Settings, EngineState],
) -> None:
    settings, state = ran
    assert any(r.status.fired_at is not None for r in state.rules.values())
    new = changed_rule(settings, "eth-mfi-overbought", condition=Condition(above=85), title="hot")
    new = changed_rule(new, "eth-rut-decoupling", condition=Condition(below=0.25))
    engine = Pipeline(new)
    report = restore(engine, state)
    assert set(report.rules.values()) == {"restored"}
    assert engine.rules.statuses() == {name: r.status for name, r in state.rules.items()}


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        ({"name": "eth-mfi-hot"}, "fresh: not in the snapshot"),
        ({"metric": "eth_ema"}, "fresh: its metric was eth_mfi"),
        (
            {"condition": Condition(crosses_above=80), "clear": None, "send_resolved": False},
            "fresh: its operator was level, now edge",
        ),
    ],
)
def test_reload_starts_a_rule_afresh_when_it_judges_something_else(
    ran: tuple[Settings, EngineState], change: dict, outcome: str
) -> None:
    settings, state = ran
    new = changed_rule(settings, "eth-mfi-overbought", **change)
    name = change.get("name", "eth-mfi-overbought")
    engine = Pipeline(new)
    report = restore(engine, state)
    assert report.rules[name] == outcome
    assert sum(v == "restored" for v in report.rules.values()) == len(new.rules) - 1
    # fresh is what the replay made of it, as after a warm-up
    replayed = Pipeline(new)
    restore(replayed, dataclasses.replace(state, rules={}))
    assert status(engine, name) == status(replayed, name)


def test_reload_with_a_longer_window_rewarms_only_what_the_bars_do_not_cover(
    ran: tuple[Settings, EngineState],
) -> None:
    settings, state = ran
    longer = dict(settings.metrics["eth_rut_corr"].model_dump(), window=300)
    engine = Pipeline(settings_with(eth_rut_corr=longer))
    report = restore(engine, state)
    assert report.warm_up() == []  # 300 days: the journal has them
    frames = {f: oracles.read_ohlcv(REAL[f]) for f in ("eth", "rut")}
    cut = {f: df[df.index < "2024-08-08"]["close"] for f, df in frames.items()}
    expected = oracles.log_returns_corr(cut["eth"], cut["rut"], 300).iloc[-1]
    assert math.isclose(engine.values()["eth_rut_corr"], expected, rel_tol=1e-9)

    longest = dict(longer, window=1000)
    engine = Pipeline(settings_with(eth_rut_corr=longest))
    report = restore(engine, state)
    assert report.warm_up() == [("eth", "1d"), ("rut", "1d")]
    # ETH trades every day: 1001 RUT sessions (and a long weekend) span 1458 of its days
    assert "of the 1458 bars needed" in report.series[0].reason
    assert len(engine.builders("eth")[0].bars) == 0  # left empty for the warm-up
    assert len(engine.builders("btc")[0].bars) == 91
    assert set(report.rules.values()) == {"restored"}


def test_reload_ignores_removed_feeds_and_rewarms_changed_ones(
    ran: tuple[Settings, EngineState], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, state = ran
    rut_parts = [
        "eth_rut_corr",
        "eth_rut_corr_90",
        "eth_rut_divergence",
        "eth-rut-decoupling",
        "eth-rut-recoupling",
        "eth-decoupled-and-leading",
        "eth-rut-residual-extreme",
        "rut-higher-high-eth-lower-low",
    ]
    no_rut = settings_with(drop=rut_parts)
    no_rut = no_rut.model_copy(
        update={"feeds": {k: v for k, v in no_rut.feeds.items() if k != "rut"}}
    )
    engine = Pipeline(no_rut)
    report = restore(engine, state)
    assert [(s.feed, s.restored > 0) for s in report.series] == [("eth", True), ("btc", True)]
    assert set(report.rules.values()) == {"restored"}

    feeds = dict(settings.feeds)
    feeds["eth"] = feeds["eth"].model_copy(update={"symbol": "ETH/USDC"})
    moved = settings.model_copy(update={"feeds": feeds})
    path = tmp_path / "engine.snapshot"
    save(path, state)
    with caplog.at_level(logging.INFO, "moodring.snapshot"):
        loaded = load(path, moved, max_age_s=math.inf)
    assert loaded is not None and "2 of its 3 series still match" in caplog.text
    report = restore(Pipeline(moved), loaded)
    assert report.warm_up() == [("eth", "1d")]
    assert report.series[0].reason == "the feed changed"


def test_published_values_survive_save_and_restore(tmp_path: Path) -> None:
    settings = load_settings()
    a = Pipeline(settings)
    a.track(["altseason_index"], 10)
    attach(a)
    for i, value in enumerate((31.0, 33.0, float("nan"), 35.0)):
        a.set_external("altseason_index", i * DAY, value, closed=True)
    a.set_external("altseason_index", 4 * DAY, 36.5, closed=False)
    path = tmp_path / "s.npz"
    save(path, capture(a))
    state = load(path, settings, max_age_s=math.inf)
    assert state is not None
    b = Pipeline(settings)
    b.track(["altseason_index"], 10)
    restore(b, state)
    assert b.values()["altseason_index"] == 35.0
    assert b.peek_values()["altseason_index"] == 36.5
    assert b.history("altseason_index") == [
        (0, 31.0),
        (DAY, 33.0),
        (2 * DAY, None),
        (3 * DAY, 35.0),
    ]
