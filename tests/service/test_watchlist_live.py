"""Watchlists live: ccxt.pro against the fake exchange serving re-labelled captures.

An explicit watchlist changed by a reload, a dynamic one ranked from the fake's universe.
"""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from moodring.configfile import load_settings
from moodring.market.frame import BarFrame
from moodring.service.daemon import Daemon
from moodring.testing.fake_exchange import FakeExchange
from tests.support.captures import CAPTURES
from tests.support.receiver import Receiver
from tests.support.wait import until


def config(fake: FakeExchange, state: Path, receiver: Receiver, members: list[str]) -> dict:
    urls = {"ws_url": fake.ws_url, "rest_url": fake.rest_url}
    return {
        "watchlists": {"alts": members},
        "feeds": {
            "btc": {"symbol": "BTC/USDT", **urls},
            "{base}": {"for_each": "alts", "symbol": "{symbol}", **urls},
        },
        "metrics": {
            "{base}_mfi": {
                "for_each": "alts",
                "type": "mfi",
                "series": "{base}",
                "timeframe": "1m",
                "period": 2,
            },
        },
        "rules": [  # fires on the first live tick and holds (warm-up bars close, they do not tick)
            {
                "for_each": "alts",
                "name": "{base}-flow",
                "metric": "{base}_mfi",
                "on": "tick",
                "condition": {"above": -1},
                "title": "{{ rule }}: {BASE} money flow",
                "message": "{BASE} MFI {{ {base}_mfi | round(1) }}",
            }
        ],
        "digest": {"chart": False, "watchlist": {"{base}-flow": "have money flowing"}},
        "notify": {"urls": [receiver.url()]},
        "http": {"port": 0},
        "state_dir": str(state),
    }


async def test_an_explicit_watchlist_runs_live_and_a_reload_changes_its_members(
    tmp_path: Path, receiver: Receiver
) -> None:
    # SOL and XRP replay ETH's real trades, ADA BTC's, each under its own name
    relabel = {"SOLUSDT": "ETHUSDT", "XRPUSDT": "ETHUSDT", "ADAUSDT": "BTCUSDT"}
    path = tmp_path / "moodring.yaml"

    def titles() -> list[str]:
        return [p["title"] for p in receiver.payloads]

    async with FakeExchange(CAPTURES, speed=20.0, loop=True, relabel=relabel) as fake:
        cfg = config(fake, tmp_path / "state", receiver, ["SOL/USDT", "XRP/USDT"])
        path.write_text(yaml.safe_dump(cfg))
        daemon = Daemon(load_settings(path), config_path=path)
        async with daemon:
            assert set(daemon.settings.feeds) == {"btc", "sol", "xrp"}
            fired = {"sol-flow: SOL money flow", "xrp-flow: XRP money flow"}
            await until(lambda: fired <= set(titles()), "SOL's and XRP's rules", timeout=120)
            ticks = daemon.telemetry.tick_counts()
            assert ticks.get("sol", 0) > 0 and ticks.get("xrp", 0) > 0
            # warmed up, the live objects are kept out of full collections
            await until(lambda: gc.get_freeze_count() > 0, "the heap frozen", timeout=60)
            # the same trades under two names: the same closed values
            await until(
                lambda: daemon.engine.values()["sol_mfi"] == daemon.engine.values()["xrp_mfi"] >= 0,
                "SOL's and XRP's MFI",
                timeout=120,
            )

            daemon.send_digest(datetime.now(UTC))
            await until(lambda: any("watched alts" in m for m in receiver.messages), "a digest")
            digest = next(m for m in receiver.messages if "watched alts" in m)
            assert digest.endswith("2 of 2 watched alts have money flowing: SOL, XRP.")

            # XRP leaves, ADA joins: XRP's firing rule is resolved, ADA's fires, SOL's stands
            cfg["watchlists"]["alts"] = ["SOL/USDT", "ADA/USDT"]
            path.write_text(yaml.safe_dump(cfg))
            old_engine = weakref.ref(daemon.engine)
            assert await daemon.reload()
            assert set(daemon.settings.feeds) == {"btc", "sol", "ada"}

            def old_engine_gone() -> bool:
                gc.collect()
                return old_engine() is None

            # thawed for the swap: the old engine's cycles go (once a chart or an alert in
            # flight that still reads it is done)
            await until(old_engine_gone, "the old engine gone")
            assert daemon.engine.rules.rule("xrp-flow") is None
            sol = daemon.engine.rules.rule("sol-flow")
            assert sol is not None and sol.status.state == "firing"
            await until(lambda: "ada-flow: ADA money flow" in titles(), "ADA's rule", timeout=120)
            assert "XRP left watchlist alts" in titles()
            left = next(p for p in receiver.payloads if p["title"] == "XRP left watchlist alts")
            assert left["message"] == "XRP left watchlist alts: xrp-flow is no longer watched."
            assert daemon.telemetry.tick_counts().get("ada", 0) > 0
            await daemon.dispatcher.drain(5)
    # nothing was told twice: SOL fired once, before the reload, and was carried over
    assert titles().count("sol-flow: SOL money flow") == 1
    assert titles().count("XRP left watchlist alts") == 1


DAY_MS = 86_400_000
FIRST_DAY = 1_700_006_400_000  # 2023-11-15 00:00 UTC


def daily(volumes: list[float]) -> BarFrame:
    """Return flat daily bars at 1.0 with these base volumes, from FIRST_DAY on."""
    days = FIRST_DAY + DAY_MS * np.arange(len(volumes), dtype=np.int64)
    flat = np.ones(len(volumes))
    return BarFrame(days, flat, flat.copy(), flat.copy(), flat.copy(), np.asarray(volumes))


async def test_a_dynamic_watchlist_is_ranked_live_and_a_re_rank_changes_its_members(
    tmp_path: Path, receiver: Receiver
) -> None:
    # the top 2 by 2-day quote volume: SOL always; XRP until day 5, ADA from day 6 on
    universe = {
        "SOLUSDT": daily([9e6] * 12),
        "XRPUSDT": daily([5e6] * 6 + [1e3] * 6),
        "ADAUSDT": daily([1e3] * 6 + [5e6] * 6),
        "DOGEUSDT": daily([1e4] * 12),
    }
    relabel = {"SOLUSDT": "ETHUSDT", "XRPUSDT": "ETHUSDT", "ADAUSDT": "BTCUSDT"}
    path = tmp_path / "moodring.yaml"

    def titles() -> list[str]:
        return [p["title"] for p in receiver.payloads]

    async with FakeExchange(
        CAPTURES,
        speed=20.0,
        loop=True,
        relabel=relabel,
        universe=universe,
        today=FIRST_DAY + 5 * DAY_MS,  # days 3 and 4 closed rank the members: SOL, XRP
    ) as fake:
        cfg = config(fake, tmp_path / "state", receiver, [])
        cfg["watchlists"]["alts"] = {
            "top": 2,
            "volume_days": 2,
            "refresh": "1s",
            "rest_url": fake.rest_url,
        }
        path.write_text(yaml.safe_dump(cfg))
        daemon = Daemon(load_settings(path), config_path=path)
        async with daemon:
            feeds = lambda: set(daemon.settings.feeds)  # noqa: E731
            await until(lambda: feeds() == {"btc", "sol", "xrp"}, "SOL and XRP ranked", timeout=60)
            assert [m.base for m in daemon.settings.members("alts")] == ["SOL", "XRP"]
            fired = {"sol-flow: SOL money flow", "xrp-flow: XRP money flow"}
            await until(lambda: fired <= set(titles()), "SOL's and XRP's rules", timeout=120)

            fake.advance_day(4)  # days 7 and 8 closed: ADA overtakes XRP
            await until(lambda: feeds() == {"btc", "sol", "ada"}, "ADA ranked", timeout=60)
            assert daemon.engine.rules.rule("xrp-flow") is None
            sol = daemon.engine.rules.rule("sol-flow")
            assert sol is not None and sol.status.state == "firing"
            await until(lambda: "ada-flow: ADA money flow" in titles(), "ADA's rule", timeout=120)
            left = next(p for p in receiver.payloads if p["title"].startswith("XRP left"))
            assert left["title"] == "XRP left the top 2 watchlist alts"
            assert left["message"] == (
                "XRP left the top 2 watchlist alts: xrp-flow is no longer watched."
            )
            await daemon.dispatcher.drain(5)
    # SOL's state was carried over the re-rank: told once
    assert titles().count("sol-flow: SOL money flow") == 1
    assert titles().count("XRP left the top 2 watchlist alts") == 1
    # a restart runs the members last ranked (until ranked anew), their states restored
    again = Daemon(load_settings(path), config_path=path)
    assert set(again.settings.feeds) == {"btc", "sol", "ada"}
    sol = again.engine.rules.rule("sol-flow")
    assert sol is not None and sol.status.state == "firing"
    again.outbox.close()
