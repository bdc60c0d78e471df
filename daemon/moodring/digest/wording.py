"""The digest's wording: the names its templates may use and the helpers they call.

The default title and message are ``DigestConfig``'s defaults (``moodring.settings``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from moodring.rules.templates import check_template
from moodring.settings import CHECKS

# Variables of a digest template besides the metrics by name (see content.build_digest).
NAMES = frozenset(
    {
        "time",
        "date",
        "correlation",
        "ratio",
        "mfi",
        "divergence",
        "altseason",
        "firing",
        "recent",
        "watchlists",
        "num",
        "pct",
        "signed",
    }
)


# Firing members a watchlist line names (the rest are counted).
SHOWN_MEMBERS = 10


def check_digest_template(text: str, metrics: Iterable[str]) -> None:
    """Raise TemplateError when a digest template names anything but metrics and ``NAMES``."""
    check_template(text, {*metrics, *NAMES})


CHECKS.register("digest template", check_digest_template)


def num(value: object, digits: int = 2) -> str:
    """Format a number with ``digits`` decimals; anything else (None, NaN) reads n/a."""
    return f"{value:.{digits}f}" if _finite(value) else "n/a"


def pct(value: object, digits: int = 1) -> str:
    """Format a percent change with its sign (``+7.1%``), or n/a."""
    return f"{value:+.{digits}f}%" if _finite(value) else "n/a"


def signed(value: object, digits: int = 2) -> str:
    """Format a change with its sign (``+4``), or n/a."""
    return f"{value:+.{digits}f}" if _finite(value) else "n/a"


def corr_trend(value: float | None, change: float | None) -> str:
    """Say how ETH moves against small caps from the correlation and its week change."""
    if value is None:
        return "has no correlation reading against"
    if change is not None and change <= -0.1:
        return "is decoupling from"
    if change is not None and change >= 0.1:
        return "is re-coupling with"
    if value < 0.3:
        return "stays decoupled from"
    return "moves with" if value >= 0.6 else "keeps a loose link to"


def corr_move(change: float | None) -> str:
    """Return ``down from`` / ``up from`` / ``vs`` for a week change."""
    if change is None or abs(change) < 0.005:
        return "vs"
    return "down from" if change < 0 else "up from"


def ratio_trend(change: float | None) -> str:
    """Say whether ETH/BTC strengthens or weakens from its percent change."""
    if change is None:
        return "has no reading"
    if change >= 2:
        return "strengthens"
    return "weakens" if change <= -2 else "holds steady"


def breakout_state(value: float | None, lookback: int | None) -> str:
    """Describe a breakout output (+1, -1, 0) over its lookback."""
    days = f"{lookback}-day" if lookback else "recent"
    if value is None:
        return "breakout n/a"
    if value > 0:
        return f"breaking out above its {days} range"
    if value < 0:
        return f"breaking down below its {days} range"
    return f"inside its {days} range"


def mfi_band(value: float | None, lo: float, hi: float) -> str:
    """Place an MFI reading against the bullish band (and the 20 oversold line)."""
    band = f"{lo:g}\u2013{hi:g}"
    if value is None:
        return "n/a"
    if value > hi:
        return f"above the bullish {band} band: overbought"
    if value >= lo:
        return f"inside the bullish {band} band"
    return "oversold, below 20" if value < 20 else f"below the bullish {band} band"


def divergence_state(
    residual_z: float | None, opposite: float | None, swing: float | None, lookback: int | None
) -> str:
    """Describe the divergence outputs in words: swings, opposite moves, an extreme residual."""
    if residual_z is None and opposite is None and swing is None:
        return "n/a"
    over = f"over {lookback} sessions" if lookback else "lately"
    said = []
    if swing:
        said.append(
            f"Russell 2000 higher high while ETH made a lower low {over}"
            if swing > 0
            else f"Russell 2000 lower low while ETH made a higher high {over}"
        )
    if opposite:
        said.append(
            f"ETH up while the Russell 2000 fell {over}"
            if opposite > 0
            else f"ETH down while the Russell 2000 rose {over}"
        )
    if residual_z is not None and abs(residual_z) >= 2:
        said.append(f"ETH's last move is {residual_z:+.1f} sd from what the Russell 2000 explains")
    return "; ".join(said) or "none"


def watchlist_line(
    watchlist: str, total: int, firing: Sequence[str], phrase: str | None, rule: str
) -> str:
    """Say how many watched members fire a rule template: ``3 of 50 watched alts are …: SOL, …``."""
    said = phrase or f"fire {rule}"
    text = f"{len(firing)} of {total} watched {watchlist} {said}"
    if not firing:
        return f"{text}."
    names = ", ".join(firing[:SHOWN_MEMBERS])
    more = len(firing) - SHOWN_MEMBERS
    return f"{text}: {names}{f' and {more} more' if more > 0 else ''}."


def altseason_label(value: float | None, alt: float = 75.0, bitcoin: float = 25.0) -> str:
    """Name the season of an Altcoin Season Index reading."""
    if value is None:
        return "n/a"
    if value >= alt:
        return "altcoin season"
    if value <= bitcoin:
        return "bitcoin season"
    return "altcoin-leaning" if value >= 50 else "bitcoin-leaning"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
