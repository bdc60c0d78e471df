"""An explicit watchlist live: ccxt.pro against the fake exchange serving re-labelled captures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml

from moodring.configfile import load_settings
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
            # the same trades under two names: the same closed values
            values = daemon.engine.values
            await until(
                lambda: values()["sol_mfi"] == values()["xrp_mfi"] >= 0,
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
            assert await daemon.reload()
            assert set(daemon.settings.feeds) == {"btc", "sol", "ada"}
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
