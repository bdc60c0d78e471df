"""What the digest says: facts read from the engine, the configured wording, and chart data."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from moodring.digest import wording
from moodring.market.timeframe import Timeframe
from moodring.metrics.altseason import ALT_SEASON, BITCOIN_SEASON
from moodring.metrics.breakout import BreakoutConfig
from moodring.metrics.correlation import CorrelationConfig
from moodring.metrics.divergence import DivergenceConfig
from moodring.metrics.moving import PctChangeConfig
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert, Severity
from moodring.rules.templates import metric_namespace, render
from moodring.settings import DigestConfig, Settings
from moodring.times import format_duration, iso_time

# Closed values the engine keeps per digest column: 90 days of changes plus the chart.
DIGEST_BARS = 120
CHART_DAYS = 90
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


@dataclass(frozen=True, slots=True)
class Digest:
    """A digest as of ``time`` (epoch ms): its wording, the facts behind it, its chart data."""

    time: int
    title: str
    message: str
    severity: Severity
    facts: dict[str, Any]
    chart: dict[str, Any] | None


def digest_config(settings: Settings) -> DigestConfig:
    """Return the configured digest section, or the defaults when there is none."""
    return settings.digest if settings.digest is not None else DigestConfig()


def digest_columns(settings: Settings) -> tuple[str, ...]:
    """Return the metric outputs the engine must ``track`` (``DIGEST_BARS``) for the digest."""
    columns = list(settings.metric_columns())
    out: list[str] = []
    for name in digest_config(settings).metric_names():
        parts = [c for c in columns if c.partition(".")[0] == name and c != name]
        out.extend(parts or [name])
    return tuple(dict.fromkeys(out))


def build_digest(engine: Pipeline, settings: Settings, at_ms: int) -> Digest:
    """Read the engine's closed values, history and rules into a digest as of ``at_ms``."""
    config = digest_config(settings)
    reader = _Reader(engine, settings)
    facts = _facts(reader, config, at_ms)
    context = {
        **metric_namespace(engine.values()),
        **facts,
        "num": wording.num,
        "pct": wording.pct,
        "signed": wording.signed,
    }
    title = render(config.title, context)
    chart = _chart(reader, config, title, at_ms) if config.chart else None
    return Digest(at_ms, title, render(config.message, context), config.severity, facts, chart)


def digest_alert(digest: Digest) -> Alert:
    """Return the digest as an alert for the outbox, keyed by its scheduled time."""
    return Alert(
        "digest",
        "firing",
        digest.time,
        "digest",
        math.nan,
        digest.severity,
        digest.title,
        digest.message,
        digest.chart,
    )


def digest_payload(digest: Digest) -> dict[str, Any]:
    """Return the JSON payload for MQTT ``<prefix>/digest``: wording and facts."""
    return {"title": digest.title, "message": digest.message, **digest.facts}


class _Reader:
    """Finite closed values, week-ago values and spans of the engine's metrics by name."""

    def __init__(self, engine: Pipeline, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.values = engine.values()

    def now(self, name: str | None) -> float | None:
        """Return the latest closed value, or None."""
        return _clean(self.values.get(name)) if name else None

    def week_ago(self, name: str | None) -> float | None:
        """Return the value of the last bar a week or more before the latest one."""
        history = self.engine.history(name) if name else []
        if not history:
            return None
        cutoff = history[-1][0] - WEEK_MS
        before = [value for t, value in history if t <= cutoff]
        return _clean(before[-1]) if before else None

    def config(self, name: str | None) -> Any:
        """Return the metric's config, or None."""
        return self.settings.metrics.get(name) if name else None

    def span(self, name: str | None) -> str:
        """Return a metric's window as a duration (``30d``), or n/a."""
        config = self.config(name)
        bars = getattr(config, "window", None) or getattr(config, "lookback", None)
        if not isinstance(config, CorrelationConfig | PctChangeConfig) or not bars:
            return "n/a"
        return format_duration(bars * Timeframe.parse(config.timeframe).ms / 1000)

    def series(self, name: str | None) -> list[tuple[int, float | None]]:
        """Return the tracked closed values as (bar time, value or None)."""
        return [(t, _clean(v)) for t, v in self.engine.history(name)] if name else []

    def ratio(self, config: DigestConfig) -> list[tuple[int, float | None]]:
        """Return the kept closes of the series the ratio change (or breakout) metric reads."""
        for name in (*config.ratio_change[:1], config.breakout):
            metric = self.config(name)
            if isinstance(metric, PctChangeConfig | BreakoutConfig):
                ring = self.engine.source(metric.series, metric.timeframe).bars
                times, closes = ring.time.window().tolist(), ring.close.window().tolist()
                return [(int(t), _clean(c)) for t, c in zip(times, closes, strict=True)]
        return []


def _facts(reader: _Reader, config: DigestConfig, at_ms: int) -> dict[str, Any]:
    """Return the digest's facts: JSON-able, None where a value is missing."""
    short, long = (*config.correlation, None, None)[:2]
    corr, corr_ago = reader.now(short), reader.week_ago(short)
    corr_change = _minus(corr, corr_ago)
    chg, chg_long = (*config.ratio_change, None, None)[:2]
    breakout = reader.now(config.breakout)
    closes = [c for _, c in reader.ratio(config) if c is not None]
    breakout_config = reader.config(config.breakout)
    lookback = breakout_config.lookback if isinstance(breakout_config, BreakoutConfig) else None
    mfi = reader.now(config.mfi)
    lo, hi = config.mfi_band
    div = config.divergence
    z, opposite, swing = (
        reader.now(f"{div}.{k}" if div else None) for k in ("residual_z", "opposite", "swing")
    )
    div_config = reader.config(div)
    div_lookback = div_config.lookback if isinstance(div_config, DivergenceConfig) else None
    alt, alt_ago = reader.now(config.altseason), reader.week_ago(config.altseason)
    statuses = reader.engine.rules.statuses()
    firing = [name for name, s in statuses.items() if s.state == "firing"]
    recent = [
        name
        for name, s in statuses.items()
        if s.state != "firing" and s.fired_at is not None and at_ms - s.fired_at < WEEK_MS
    ]
    return {
        "t": at_ms,
        "time": iso_time(at_ms),
        "date": datetime.fromtimestamp(at_ms / 1000, ZoneInfo(config.timezone)).date().isoformat(),
        "correlation": {
            "value": corr,
            "long": reader.now(long),
            "week_ago": corr_ago,
            "change": corr_change,
            "window": reader.span(short),
            "long_window": reader.span(long),
            "trend": wording.corr_trend(corr, corr_change),
            "move": wording.corr_move(corr_change),
        },
        "ratio": {
            "value": closes[-1] if closes else None,
            "change": reader.now(chg),
            "change_long": reader.now(chg_long),
            "period": reader.span(chg),
            "period_long": reader.span(chg_long),
            "trend": wording.ratio_trend(reader.now(chg)),
            "breakout": breakout,
            "breakout_state": wording.breakout_state(breakout, lookback),
        },
        "mfi": {"value": mfi, "band_lo": lo, "band_hi": hi, "band": wording.mfi_band(mfi, lo, hi)},
        "divergence": {
            "residual_z": z,
            "beta": reader.now(f"{div}.beta" if div else None),
            "opposite": opposite,
            "swing": swing,
            "state": wording.divergence_state(z, opposite, swing, div_lookback),
        },
        "altseason": {
            "value": alt,
            "week_ago": alt_ago,
            "change": _minus(alt, alt_ago),
            "label": wording.altseason_label(alt, ALT_SEASON, BITCOIN_SEASON),
        },
        "firing": firing,
        "recent": recent,
        "watchlists": _watchlists(reader, config),
    }


def _watchlists(reader: _Reader, config: DigestConfig) -> list[dict[str, Any]]:
    """Return a line per rule template of a watchlist: its members, those firing, the words.

    With ``digest.watchlist`` given, only the templates it names, in its order.
    """
    settings = reader.settings
    templates = settings.expansion.templates("rules")
    chosen = list(config.watchlist) if config.watchlist else list(templates)
    states = {rule.config.name: rule.status.state for rule in reader.engine.rules.rules}
    lines = []
    for template in chosen:
        watchlist = templates.get(template)
        members = settings.members(watchlist) if watchlist else ()
        if watchlist is None or not members:
            continue
        rules = {
            origin.member: name
            for (section, name), origin in settings.expansion.names.items()
            if section == "rules" and origin.template == template
        }
        firing = [m.base for m in members if states.get(rules.get(m, "")) == "firing"]
        phrase = config.watchlist.get(template)
        lines.append(
            {
                "watchlist": watchlist,
                "rule": template,
                "members": len(members),
                "firing": firing,
                "text": wording.watchlist_line(watchlist, len(members), firing, phrase, template),
            }
        )
    return lines


def _chart(reader: _Reader, config: DigestConfig, title: str, at_ms: int) -> dict[str, Any]:
    """Return the four-panel chart data (``kind: digest``) over the last ``CHART_DAYS``."""
    start = at_ms - CHART_DAYS * DAY_MS
    short, long = (*config.correlation, None, None)[:2]
    corr = [n for n in (short, long) if n]
    keys = [reader.span(n) if reader.span(n) != "n/a" else n for n in corr]
    corr_series = {key: reader.series(n) for key, n in zip(keys, corr, strict=True)}
    corr_label = ", ".join(
        f"{key} {wording.num(reader.now(n))}" for key, n in zip(keys, corr, strict=True)
    )
    ratio = reader.ratio(config)
    ratio_change = ", ".join(
        f"{wording.pct(reader.now(n))} {reader.span(n)}" for n in config.ratio_change
    )
    lo, hi = config.mfi_band
    alt = reader.now(config.altseason)
    return {
        "kind": "digest",
        "title": title,
        "start": start,
        "end": at_ms,
        "panels": [
            _panel(
                f"ETH\u2013Russell 2000 correlation: {corr_label}",
                corr_series,
                start,
                lines=[0.0],
                limits=(-1.0, 1.0),
            ),
            _panel(
                f"ETH/BTC: {wording.num(ratio[-1][1] if ratio else None, 5)} "
                f"({ratio_change or 'n/a'})",
                {"ETH/BTC": ratio},
                start,
            ),
            _panel(
                f"ETH MFI: {wording.num(reader.now(config.mfi), 0)}",
                {"MFI": reader.series(config.mfi)},
                start,
                band=(lo, hi),
                limits=(0.0, 100.0),
            ),
            _panel(
                "Altcoin Season Index"
                + (
                    ""
                    if alt is None
                    else f": {alt:.0f} ({wording.altseason_label(alt, ALT_SEASON, BITCOIN_SEASON)})"
                ),
                {"index": reader.series(config.altseason)},
                start,
                lines=[BITCOIN_SEASON, ALT_SEASON],
                limits=(0.0, 100.0),
            ),
        ],
    }


def _panel(
    label: str,
    series: dict[str, list[tuple[int, float | None]]],
    start: int,
    *,
    lines: Iterable[float] = (),
    band: tuple[float, float] | None = None,
    limits: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Return one panel: the series' points from ``start`` on, on their shared bar times."""
    times = sorted({t for points in series.values() for t, _ in points if t >= start})
    by_time = {name: dict(points) for name, points in series.items()}
    return {
        "label": label,
        "time": times,
        "series": {name: [by_time[name].get(t) for t in times] for name in series},
        "lines": list(lines),
        "band": list(band) if band else None,
        "limits": list(limits) if limits else None,
    }


def _clean(value: object) -> float | None:
    """Return a finite float, or None."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
