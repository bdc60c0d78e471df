"""Independent reference computations (pandas, TA-Lib, numpy) on raw CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.support.paths import DATA


def read_ohlcv(path: Path) -> pd.DataFrame:
    """Read a real data file with pandas alone: UTC DatetimeIndex, open/high/low/close/volume."""
    name = str(path)
    if "yahoo_elvisbinks" in name:
        df = pd.read_csv(path, header=[0, 1], index_col=0, skiprows=[2])
        df.columns = [c[0].lower() for c in df.columns]
        df.index = pd.to_datetime(df.index, utc=True)
    elif "kraken" in name:
        df = pd.read_csv(path)
        df.index = pd.to_datetime(df["time"], unit="s", utc=True)
    elif "gnguyenquant" in name:
        df = pd.read_csv(path)
        df.index = pd.to_datetime(df["Open Time"], unit="ms", utc=True)
    elif "gapless" in name:
        df = pd.read_csv(path, comment="#")
        df.index = pd.to_datetime(df["date"], utc=True)
    else:
        df = pd.read_csv(path, na_values=["null"])
        first = df.columns[0]
        df.index = pd.to_datetime(df[first], utc=True)
    df.columns = [str(c).lower() for c in df.columns]
    if "open" not in df.columns:  # close-only files
        for col in ("open", "high", "low"):
            df[col] = df["close"]
        df["volume"] = 0.0
    df = df[["open", "high", "low", "close", "volume"]].astype(float).dropna()
    df.index.name = "time"
    return df


# NYSE holidays after the last ^RUT row (2026-02-23), from the exchange's published
# 2026 schedule: Good Friday, Memorial Day, Juneteenth, Independence Day (observed).
NYSE_2026_HOLIDAYS = ("2026-04-03", "2026-05-25", "2026-06-19", "2026-07-03")


def nyse_sessions() -> pd.DatetimeIndex:
    """NYSE trading days without moodring's calendar: the days Yahoo's ^RUT has a row (complete
    1987-09-10 → 2026-02-23), then weekdays to the end of 2026 but the published holidays."""
    rut = read_ohlcv(DATA / "daily/yahoo_alitalbi/RUT.csv").index
    later = pd.bdate_range(rut[-1] + pd.Timedelta(days=1), pd.Timestamp("2026-12-31", tz="UTC"))
    return rut.append(later.drop(pd.DatetimeIndex(NYSE_2026_HOLIDAYS, tz="UTC")))


def joined_returns(
    a: pd.Series,
    b: pd.Series,
    *,
    sessions: pd.DatetimeIndex | None = None,
    step: str | None = None,
) -> pd.DataFrame:
    """Log returns of the inner join; NaN where a return spans a data gap.

    A gap: with ``sessions`` (an equity leg), a session lies strictly between the two joined
    bars; with ``step`` (24/7 legs), they are more than ``step`` apart; with neither, none.
    """
    joined = pd.concat({"a": a, "b": b}, axis=1, join="inner")
    r = np.log(joined).diff()
    t = joined.index
    if sessions is None and step is None:
        return r
    if sessions is None:
        gap = t.to_series().diff() > pd.Timedelta(step)
    else:
        skipped = sessions.searchsorted(t[1:], "left") - sessions.searchsorted(t[:-1], "right")
        gap = pd.Series(np.r_[False, skipped > 0], t)
    r[gap.to_numpy()] = np.nan
    return r


def log_returns_corr(
    a: pd.Series,
    b: pd.Series,
    window: int,
    *,
    sessions: pd.DatetimeIndex | None = None,
    step: str | None = None,
) -> pd.Series:
    """The issue's oracle: inner join, log returns, rolling Pearson correlation.

    A window holding a return across a data gap has no value (pandas' rolling windows need
    ``window`` valid returns).
    """
    r = joined_returns(a, b, sessions=sessions, step=step)
    return r["a"].rolling(window).corr(r["b"])


def ols_residual_z(
    a: pd.Series,
    b: pd.Series,
    window: int,
    *,
    sessions: pd.DatetimeIndex | None = None,
    step: str | None = None,
) -> tuple[pd.Series, pd.Series]:
    """Residual z-score and beta by an explicit least-squares fit per window (none across a gap)."""
    r = joined_returns(a, b, sessions=sessions, step=step)
    x, y = r["a"].to_numpy(), r["b"].to_numpy()
    z = np.full(len(r), np.nan)
    beta = np.full(len(r), np.nan)
    for end in range(window + 1, len(r) + 1):
        xs, ys = x[end - window : end], y[end - window : end]
        if np.isnan(xs).any() or np.isnan(ys).any():
            continue
        design = np.column_stack([np.ones(window), ys])
        coef, *_ = np.linalg.lstsq(design, xs, rcond=None)
        resid = xs - design @ coef
        z[end - 1] = resid[-1] / resid.std(ddof=1)
        beta[end - 1] = coef[1]
    return pd.Series(z, r.index), pd.Series(beta, r.index)


def opposite(a: pd.Series, b: pd.Series, lookback: int, threshold: float) -> pd.Series:
    """+1 / -1 / 0 for opposite cumulative moves over ``lookback`` joined bars."""
    joined = pd.concat({"a": a, "b": b}, axis=1, join="inner")
    ca = joined["a"] / joined["a"].shift(lookback) - 1
    cb = joined["b"] / joined["b"].shift(lookback) - 1
    out = pd.Series(0.0, joined.index)
    out[(ca > 0) & (cb < 0) & (ca - cb >= threshold)] = 1.0
    out[(ca < 0) & (cb > 0) & (cb - ca >= threshold)] = -1.0
    out[ca.isna()] = np.nan
    return out


def swing(a: pd.DataFrame, b: pd.DataFrame, lookback: int) -> pd.Series:
    """+1 when b's recent window makes a higher high while a's makes a lower low; -1 mirrored."""
    joined = a.join(b, how="inner", suffixes=("_a", "_b"))

    def recent_vs_prior(col: str, how: str) -> pd.Series:
        roll = getattr(joined[col].rolling(lookback), how)()
        prior = roll.shift(lookback)
        return roll > prior if how == "max" else roll < prior

    bear = recent_vs_prior("high_b", "max") & recent_vs_prior("low_a", "min")
    bull = recent_vs_prior("low_b", "min") & recent_vs_prior("high_a", "max")
    out = pd.Series(0.0, joined.index)
    out[bear & ~bull] = 1.0
    out[bull & ~bear] = -1.0
    out.iloc[: 2 * lookback - 1] = np.nan
    return out


def breakout(df: pd.DataFrame, lookback: int) -> pd.Series:
    """+1 above the previous ``lookback`` bars' highest high, -1 below their lowest low."""
    top = df["high"].rolling(lookback).max().shift(1)
    bottom = df["low"].rolling(lookback).min().shift(1)
    out = pd.Series(0.0, df.index)
    out[df["close"] > top] = 1.0
    out[df["close"] < bottom] = -1.0
    out[top.isna()] = np.nan
    return out


def resample(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    """OHLCV bars aggregated with pandas; empty buckets (data gaps) dropped."""
    agg = df.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    return agg.dropna(subset=["close"])
