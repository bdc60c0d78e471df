"""The digest: content from a backtest state, templates, the chart, the schedule, delivery."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
import yaml
from matplotlib.image import imread

from moodring.backtest.csvfile import load_csv
from moodring.backtest.runner import FeedHistory
from moodring.charts.render import render_png
from moodring.cli import main
from moodring.configfile import ConfigError, load_settings
from moodring.delivery.outbox import Outbox
from moodring.digest.command import digest_from_history
from moodring.digest.content import (
    DIGEST_BARS,
    build_digest,
    digest_alert,
    digest_columns,
    digest_payload,
)
from moodring.digest.schedule import next_fire, run_schedule
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert
from moodring.settings import DEFAULT_CONFIG, DigestConfig, Settings
from tests.support.receiver import Receiver

SAMPLES = DEFAULT_CONFIG.parent / "samples"
DAY_MS = 86_400_000
AT = datetime(2025, 10, 1, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)
BLUE = np.array([31, 119, 180]) / 255  # matplotlib's first line colour


def sample_history() -> dict[str, FeedHistory]:
    return {
        f: FeedHistory.of(load_csv(SAMPLES / f"{f}_1d.csv").bars) for f in ("eth", "btc", "rut")
    }


def frame(name: str) -> pd.DataFrame:
    """Read a sample CSV with pandas: lower-case columns, UTC dates, bars closed by AT only."""
    table = pd.read_csv(SAMPLES / f"{name}_1d.csv")
    table.columns = [c.lower() for c in table.columns]
    table.index = pd.to_datetime(table.pop(table.columns[0]), utc=True)
    return table[table.index + pd.Timedelta(days=1) <= pd.Timestamp(AT)]


def with_config(tmp_path: Path, **changes: object) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config.update(changes)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


# --- content from a backtest state -------------------------------------------------------


def test_numbers_match_pandas_on_the_sample() -> None:
    digest = digest_from_history(load_settings(), sample_history(), AT_MS)

    eth, btc, rut = frame("eth"), frame("btc"), frame("rut")
    joined = pd.concat({"eth": eth.close, "rut": rut.close}, axis=1, join="inner")
    returns = np.log(joined).diff()
    corr30 = returns.eth.rolling(30).corr(returns.rut)
    corr90 = returns.eth.rolling(90).corr(returns.rut)
    week_ago = corr30[corr30.index <= corr30.index[-1] - pd.Timedelta(days=7)].iloc[-1]
    ratio = (eth.close / btc.close).dropna()
    chg30 = 100 * (ratio.iloc[-1] / ratio.iloc[-31] - 1)
    chg90 = 100 * (ratio.iloc[-1] / ratio.iloc[-91] - 1)
    mfi = talib.MFI(eth.high.values, eth.low.values, eth.close.values, eth.volume.values, 14)[-1]

    facts = digest.facts
    assert facts["correlation"]["value"] == pytest.approx(corr30.iloc[-1], abs=1e-9)
    assert facts["correlation"]["long"] == pytest.approx(corr90.iloc[-1], abs=1e-9)
    assert facts["correlation"]["week_ago"] == pytest.approx(week_ago, abs=1e-9)
    assert facts["ratio"]["value"] == pytest.approx(ratio.iloc[-1], rel=1e-12)
    assert facts["ratio"]["change"] == pytest.approx(chg30, rel=1e-9)
    assert facts["ratio"]["change_long"] == pytest.approx(chg90, rel=1e-9)
    assert facts["mfi"]["value"] == pytest.approx(mfi, abs=1e-6)

    message = digest.message
    move = "down from" if corr30.iloc[-1] < week_ago else "up from"
    assert (
        f"small caps (30d corr {corr30.iloc[-1]:.2f}, {move} {week_ago:.2f} a week ago; "
        f"90d {corr90.iloc[-1]:.2f}) while ETH/BTC " in message
    )
    assert f"({chg30:+.1f}% in 30d, {chg90:+.1f}% in 90d; " in message
    assert f"; MFI {mfi:.0f} — " in message
    assert "Altcoin Season Index n/a." in message  # no universe given
    assert digest.title == "moodring digest 2025-10-01"
    assert "[template error" not in message + digest.title


def published(settings: Settings, rows: dict[str, list[tuple[int, float]]]) -> Pipeline:
    """Return an engine whose digest columns got these closed values (day, value)."""
    engine = Pipeline(settings)
    engine.track(digest_columns(settings), DIGEST_BARS)
    for day in sorted({d for points in rows.values() for d, _ in points}):
        for column, points in rows.items():
            for d, value in points:
                if d == day:
                    engine.set_external(column, d * DAY_MS, value, closed=True)
    return engine


def example_state(settings: Settings, mfi: float = 70.2) -> Pipeline:
    return published(
        settings,
        {
            "eth_rut_corr": [(0, 0.71), (3, 0.6), (7, 0.45)],
            "eth_rut_corr_90": [(7, 0.6)],
            "ethbtc_chg_30": [(7, 7.04)],
            "ethbtc_chg_90": [(7, 12.0)],
            "ethbtc_breakout": [(7, 1.0)],
            "eth_mfi": [(7, mfi)],
            "eth_rut_divergence.residual_z": [(7, 0.4)],
            "eth_rut_divergence.opposite": [(7, 0.0)],
            "eth_rut_divergence.swing": [(7, 0.0)],
            "altseason_index": [(0, 29.0), (7, 33.0)],
        },
    )


def test_default_wording_reads_like_the_issue_example() -> None:
    settings = load_settings()
    digest = build_digest(example_state(settings), settings, 8 * DAY_MS + 13 * 3_600_000)
    assert digest.message == (
        "ETH is decoupling from small caps (30d corr 0.45, down from 0.71 a week ago; 90d 0.60) "
        "while ETH/BTC strengthens (+7.0% in 30d, +12.0% in 90d; breaking out above its 20-day "
        "range); MFI 70 — inside the bullish 50\u201380 band; Altcoin Season Index 33 "
        "(bitcoin-leaning, +4 this week).\n"
        "Divergence: none.\n"
        "Firing: ethbtc-breakout-up."
    )
    assert digest.title == "moodring digest 1970-01-09"
    assert digest.facts["altseason"]["change"] == pytest.approx(4.0)


def test_firing_rules_and_bands_are_named() -> None:
    settings = load_settings()
    digest = build_digest(example_state(settings, mfi=85.0), settings, 8 * DAY_MS)
    assert "MFI 85 — above the bullish 50\u201380 band: overbought;" in digest.message
    assert digest.facts["firing"] == ["ethbtc-breakout-up", "eth-mfi-overbought"]
    assert digest.message.endswith("Firing: ethbtc-breakout-up, eth-mfi-overbought.")


def test_missing_metrics_and_values_read_na() -> None:
    base = load_settings()
    only_mfi = base.model_copy(
        update={"metrics": {"eth_mfi": base.metrics["eth_mfi"]}, "rules": ()}
    )
    digest = digest_from_history(only_mfi, sample_history(), AT_MS)
    assert "corr n/a, vs n/a a week ago" in digest.message
    assert "ETH/BTC has no reading (n/a in n/a" in digest.message
    assert "; MFI " in digest.message and "MFI n/a" not in digest.message
    assert "Divergence: n/a." in digest.message

    empty = build_digest(Pipeline(base), base, AT_MS)
    assert "MFI n/a — n/a" in empty.message and "[template error" not in empty.message
    assert json.dumps(digest_payload(empty), allow_nan=False)
    assert all(not panel["time"] for panel in empty.chart["panels"])
    assert render_png(empty.chart).startswith(b"\x89PNG")


def test_a_user_template_changes_the_wording(tmp_path: Path) -> None:
    message = (
        "Corr {{ num(eth_rut_corr) }} ({{ correlation.trend }}); residual "
        "{{ num(eth_rut_divergence.residual_z, 1) }}; MFI {{ num(mfi.value, 1) }} {{ mfi.band }}"
    )
    path = with_config(
        tmp_path,
        digest={"message": message, "title": "Daily {{ date }}", "timezone": "America/New_York"},
    )
    settings = load_settings(path)
    digest = build_digest(example_state(settings), settings, 8 * DAY_MS + 3_600_000)
    assert digest.message == (
        "Corr 0.45 (is decoupling from); residual 0.4; MFI 70.2 inside the bullish 50\u201380 band"
    )
    assert digest.title == "Daily 1970-01-08"  # 01:00 UTC is still yesterday in New York


@pytest.mark.parametrize(
    ("digest", "expected"),
    [
        ({"message": "{{ oops"}, "digest.message"),
        ({"title": "{{ nosuch }}"}, "digest.title"),
        ({"correlation": ["nope"]}, "digest.correlation.0"),
        ({"mfi": "eth_rut_divergence"}, "digest.mfi"),
        ({"schedule": "0 13 * *"}, "digest.schedule"),
        ({"schedule": "0 25 * * *"}, "digest.schedule"),
        ({"timezone": "Mars/Olympus"}, "digest.timezone"),
    ],
    ids=["syntax", "unknown-name", "unknown-metric", "wrong-kind", "fields", "hour", "zone"],
)
def test_bad_digest_config_is_a_config_error(tmp_path: Path, digest: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"\n  {expected} \(line \d+\): "):
        load_settings(with_config(tmp_path, digest=digest))


def test_default_metric_names_may_be_missing_but_altseason_is_known_with_its_section(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    del config["metrics"]["eth_rut_corr_90"]
    del config["altseason"]
    gone = ("altseason", "eth_rut_corr_90")  # rules reading what this config leaves out
    config["rules"] = [r for r in config["rules"] if not any(name in str(r) for name in gone)]
    config["digest"] = {"altseason": "altseason_index"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_settings(path).digest.correlation[1] == "eth_rut_corr_90"
    config["digest"] = {"altseason": "altseason_members"}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"digest\.altseason"):
        load_settings(path)
    config["altseason"] = {}
    path.write_text(yaml.safe_dump(config))
    assert load_settings(path).digest.altseason == "altseason_members"


def test_digest_columns_cover_every_output_read() -> None:
    columns = digest_columns(load_settings())
    assert {
        "eth_rut_corr",
        "eth_rut_corr_90",
        "ethbtc_chg_30",
        "eth_mfi",
        "altseason_index",
        "eth_rut_divergence.swing",
    } <= set(columns)


def test_published_columns_feed_the_index_and_its_week_change() -> None:
    times = np.arange(20, dtype=np.int64) * DAY_MS + AT_MS - 20 * DAY_MS
    values = np.linspace(60.0, 79.0, 20)
    digest = digest_from_history(
        load_settings(), sample_history(), AT_MS, {"altseason_index": (times, values)}
    )
    assert "Altcoin Season Index 79 (altcoin season, +7 this week)." in digest.message
    assert digest.chart["panels"][3]["series"]["index"][-1] == pytest.approx(79.0)


# --- alert, outbox, MQTT payload -----------------------------------------------------------


def test_the_alert_is_keyed_by_the_scheduled_time(tmp_path: Path) -> None:
    settings = load_settings()
    digest = build_digest(example_state(settings), settings, 8 * DAY_MS + 13 * 3_600_000)
    alert = digest_alert(digest)
    assert (alert.rule, alert.state, alert.severity) == ("digest", "firing", "info")
    assert alert.key == f"digest|firing|{8 * DAY_MS + 13 * 3_600_000}"
    assert Alert.from_json(alert.to_json()).chart == digest.chart
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        assert outbox.add(alert, ["t"])
        assert not outbox.add(digest_alert(digest), ["t"])  # a restart sends it once
    payload = json.loads(json.dumps(digest_payload(digest), allow_nan=False))
    assert payload["message"] == digest.message
    assert payload["altseason"]["value"] == 33.0 and payload["firing"] == ["ethbtc-breakout-up"]


# --- the chart -----------------------------------------------------------------------------


def quadrant_blue(png: bytes) -> list[int]:
    """Return how many line-blue pixels each quadrant of the PNG holds (row by row)."""
    pixels = imread(io.BytesIO(png))[:, :, :3]
    height, width = pixels.shape[:2]
    blue = (np.abs(pixels - BLUE) < 0.06).all(axis=2)
    halves = [(0, height // 2), (height // 2, height)]
    return [
        int(blue[r0:r1, c0:c1].sum())
        for r0, r1 in halves
        for c0, c1 in [(0, width // 2), (width // 2, width)]
    ]


def test_chart_has_four_panels_and_stays_small() -> None:
    times = np.arange(60, dtype=np.int64) * DAY_MS + AT_MS - 60 * DAY_MS
    index = {"altseason_index": (times, np.linspace(20.0, 40.0, 60))}
    digest = digest_from_history(load_settings(), sample_history(), AT_MS, index)
    png = render_png(digest.chart)
    assert png.startswith(b"\x89PNG") and len(png) < 300_000
    assert int.from_bytes(png[16:20], "big") == 1000 and int.from_bytes(png[20:24], "big") == 700
    assert all(count > 200 for count in quadrant_blue(png))
    labels = [panel["label"] for panel in digest.chart["panels"]]
    assert labels[0].startswith("ETH\u2013Russell 2000 correlation: 30d ")
    assert labels[2].startswith("ETH MFI: ") and labels[3].startswith("Altcoin Season Index: ")

    without = digest_from_history(load_settings(), sample_history(), AT_MS)
    counts = quadrant_blue(render_png(without.chart))
    assert all(count > 200 for count in counts[:3]) and counts[3] == 0  # "no data"


def test_chart_off_in_the_config_means_no_chart() -> None:
    settings = load_settings()
    settings = settings.model_copy(update={"digest": DigestConfig(chart=False)})
    assert build_digest(Pipeline(settings), settings, AT_MS).chart is None


# --- the schedule --------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_next_fire_follows_berlin_across_both_dst_changes() -> None:
    berlin = DigestConfig(schedule="0 13 * * *", timezone="Europe/Berlin")
    assert next_fire(berlin, utc(2025, 3, 29, 12)) == utc(2025, 3, 30, 11)  # CEST starts
    assert next_fire(berlin, utc(2025, 3, 29, 11)) == utc(2025, 3, 29, 12)
    assert next_fire(berlin, utc(2025, 10, 26, 11)) == utc(2025, 10, 26, 12)  # CET again
    night = DigestConfig(schedule="30 2 * * *", timezone="Europe/Berlin")
    # 02:30 does not exist on 30 March: it runs at the change; on 26 October it runs once
    assert next_fire(night, utc(2025, 3, 29, 12)) == utc(2025, 3, 30, 1)
    assert next_fire(night, utc(2025, 10, 25, 12)) == utc(2025, 10, 26, 0, 30)
    assert next_fire(night, utc(2025, 10, 26, 0, 30)) == utc(2025, 10, 27, 1, 30)
    assert next_fire(DigestConfig(), utc(2025, 1, 1, 13)) == utc(2025, 1, 2, 13)


class StopError(Exception):
    pass


class FakeClock:
    """A wall clock that sleeping moves; ``jumps`` adds a suspend after the n-th sleep."""

    def __init__(self, start: datetime, end: datetime, jumps: dict[int, timedelta]) -> None:
        self.now, self.end, self.jumps, self.sleeps = start, end, jumps, 0

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 60
        self.sleeps += 1
        self.now += timedelta(seconds=seconds) + self.jumps.get(self.sleeps, timedelta())
        if self.now > self.end:
            raise StopError
        await asyncio.sleep(0)


async def run_until_stopped(config: DigestConfig, clock: FakeClock) -> list[datetime]:
    fired: list[tuple[datetime, datetime]] = []

    async def fire(at: datetime) -> None:
        fired.append((at, clock.now))

    with pytest.raises(StopError):
        await run_schedule(config, fire, clock=clock, sleep=clock.sleep)
    assert all(now >= at for at, now in fired)
    return [at for at, _ in fired]


async def test_schedule_fires_on_time_across_dst() -> None:
    config = DigestConfig(schedule="0 13 * * *", timezone="Europe/Berlin")
    clock = FakeClock(utc(2025, 3, 28, 14), utc(2025, 4, 1, 14), {})
    assert await run_until_stopped(config, clock) == [
        utc(2025, 3, 29, 12),
        utc(2025, 3, 30, 11),
        utc(2025, 3, 31, 11),
        utc(2025, 4, 1, 11),
    ]


async def test_fires_missed_while_suspended_fire_once() -> None:
    clock = FakeClock(utc(2025, 1, 1, 12), utc(2025, 1, 7, 0), {70: timedelta(days=3)})
    fired = await run_until_stopped(DigestConfig(), clock)
    # sleep 70 ends at 13:10 on 1 January, then three days pass at once
    assert fired == [
        utc(2025, 1, 1, 13),
        utc(2025, 1, 4, 13),
        utc(2025, 1, 5, 13),
        utc(2025, 1, 6, 13),
    ]


async def test_a_failing_fire_does_not_stop_the_schedule(caplog) -> None:
    clock = FakeClock(utc(2025, 1, 1, 12), utc(2025, 1, 3, 14), {})
    calls: list[datetime] = []

    def fire(at: datetime) -> None:
        calls.append(at)
        raise RuntimeError("boom")

    with pytest.raises(StopError):
        await run_schedule(DigestConfig(), fire, clock=clock, sleep=clock.sleep)
    assert calls == [utc(2025, 1, 1, 13), utc(2025, 1, 2, 13), utc(2025, 1, 3, 13)]
    assert "boom" in caplog.text


# --- the command ---------------------------------------------------------------------------


def test_digest_command_prints_the_sample_digest(capsys) -> None:
    assert main(["digest", "--sample", "--at", "2025-10-01"]) == 0
    title, message = capsys.readouterr().out.split("\n", 1)
    assert title == "moodring digest 2025-10-01"
    assert message == digest_from_history(load_settings(), sample_history(), AT_MS).message + "\n"


def test_digest_send_delivers_text_and_chart_to_a_json_receiver(
    tmp_path: Path, receiver: Receiver, capsys
) -> None:
    url = f"json://127.0.0.1:{receiver.port}/digest"
    config = with_config(tmp_path, notify={"urls": [url]}, state_dir=str(tmp_path / "state"))
    chart = tmp_path / "chart.png"
    assert main(["digest", "-c", str(config), "--sample", "--send", "--chart", str(chart)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("moodring digest ") and out[-1].startswith("OK")
    (payload,) = receiver.payloads
    assert payload["title"] == out[0]
    assert payload["message"].startswith("ETH ") and "30d corr 0." in payload["message"]
    png = base64.b64decode(payload["attachments"][0]["base64"])
    assert png.startswith(b"\x89PNG") and 20_000 < len(png) < 300_000
    assert chart.read_bytes() == png
    assert not (tmp_path / "state").exists()  # a private outbox: the daemon's is not touched


def test_digest_send_reports_a_failing_url(tmp_path: Path, receiver: Receiver, capsys) -> None:
    receiver.mode = "fail"
    config = with_config(tmp_path, notify={"urls": [receiver.url()]})
    assert main(["digest", "-c", str(config), "--sample", "--send"]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAILED")


def test_digest_command_usage_errors(tmp_path: Path, capsys) -> None:
    assert main(["digest"]) == 1
    assert "no history given" in capsys.readouterr().err
    assert main(["digest", "--sample", "--send"]) == 1
    assert "no notify.urls" in capsys.readouterr().err


def test_digest_command_reads_a_universe(data_dir: Path, capsys) -> None:
    daily = data_dir / "daily"
    assert (
        main(
            [
                "digest",
                "--data",
                f"eth={daily / 'binance_yanniedog/ETHUSDT_1d.csv'}",
                "--data",
                f"btc={daily / 'binance_yanniedog/BTCUSDT_1d.csv'}",
                "--data",
                f"rut={daily / 'yahoo_alitalbi/RUT.csv'}",
                "--universe",
                str(daily / "binance_alts"),
                "--at",
                "2025-06-01",
            ]
        )
        == 0
    )
    message = capsys.readouterr().out
    index = message.split("Altcoin Season Index ", 1)[1]
    assert not index.startswith("n/a") and math.isfinite(float(index.split()[0]))
