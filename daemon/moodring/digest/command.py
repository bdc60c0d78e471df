"""``moodring digest``: a digest from history CSVs, printed, and sent on request."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from moodring.backtest.runner import FeedHistory, merged_bars
from moodring.digest.content import DIGEST_BARS, Digest, build_digest, digest_alert, digest_columns
from moodring.pipeline import Pipeline
from moodring.settings import Settings

# Seconds a chart may take besides notify.timeout per attempt before --send gives up.
CHART_BUDGET_S = 10.0

Columns = Mapping[str, tuple[np.ndarray, np.ndarray]]


def digest_from_history(
    settings: Settings,
    history: Mapping[str, FeedHistory],
    at_ms: int | None = None,
    externals: Columns | None = None,
) -> Digest:
    """Replay history through an engine and return the digest as of ``at_ms``.

    The engine sees the bars closed by ``at_ms`` (default: when the last bar of a 24/7 feed
    closed) and the ``externals`` columns (e.g. the Altcoin Season Index: open times and
    values) of those days.
    """
    if at_ms is None:
        ends = {f: int(h.bars.time[-1]) + h.step_ms for f, h in history.items() if len(h.bars)}
        # a 24/7 feed's last bar is the present; an equity feed's may be last Friday's
        crypto = [end for f, end in ends.items() if settings.feeds[f].round_the_clock]
        at_ms = max(crypto or ends.values())
    seen = {feed: h.until(at_ms - h.step_ms + 1) for feed, h in history.items()}
    events: list[tuple[int, str, float]] = []
    for column, (times, values) in (externals or {}).items():
        step = _step(times)
        for t, v in zip(times.tolist(), values.tolist(), strict=True):
            if t + step <= at_ms:
                events.append((int(t), column, float(v)))
    pending = deque(sorted(events))
    engine = Pipeline(settings)
    engine.track(digest_columns(settings), DIGEST_BARS)
    moment: int | None = None
    with ExitStack() as stack:
        for feed, t, bar in merged_bars(seen):
            if t != moment:
                stack.close()
                stack.enter_context(engine.deferred())
                moment = t
            while pending and pending[0][0] <= t:
                when, column, value = pending.popleft()
                engine.set_external(column, when, value, closed=True)
            engine.on_candle(feed, t, bar, closed=True, length_ms=seen[feed].step_ms)
        for when, column, value in pending:
            engine.set_external(column, when, value, closed=True)
    return build_digest(engine, settings, at_ms)


async def send_digest(
    settings: Settings, digest: Digest, *, say: Callable[[str], None] = print
) -> int:
    """Deliver the digest with its chart to every routed URL; say OK/FAILED each; 1 on failure.

    It goes through the daemon's delivery path (outbox, dispatcher, chart in a worker
    thread) on a private outbox: a running daemon's outbox is neither raced nor pruned.
    """
    from moodring.charts.render import render_with_budget
    from moodring.delivery.dispatcher import Dispatcher
    from moodring.delivery.outbox import Outbox
    from moodring.delivery.sender import mask_url, routed_targets, target_id
    from moodring.statedir import scratch_dir

    alert = digest_alert(digest)
    targets = {
        target_id(t.url.get_secret_value()): t for t in routed_targets(alert, settings.notify)
    }
    if not targets:
        say(f"FAILED  no notify URL takes {alert.severity} alerts (see notify.routes)")
        return 1
    results: dict[str, bool] = {}
    done = asyncio.Event()

    def result(tid: str, ok: bool) -> None:
        results.setdefault(tid, ok)
        if results.keys() >= targets.keys():
            done.set()

    with scratch_dir() as tmp, Outbox(tmp / "outbox.sqlite") as outbox:
        dispatcher = Dispatcher(
            outbox,
            settings.notify,
            render_chart=render_with_budget,
            chart_dir=Path(tmp) / "charts",
            on_result=result,
        )
        dispatcher.enqueue(alert)
        async with dispatcher:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * settings.notify.timeout + CHART_BUDGET_S):
                    await done.wait()
    for tid, target in targets.items():
        ok = results.get(tid, False)
        say(f"{'OK    ' if ok else 'FAILED'}  {mask_url(target.url.get_secret_value())}")
    return 0 if all(results.get(tid, False) for tid in targets) else 1


def _step(times: np.ndarray) -> int:
    """Return the usual gap between open times (a day when there are too few to tell)."""
    gaps = np.diff(np.asarray(times, dtype=np.int64))
    return int(np.median(gaps)) if gaps.size else 86_400_000
