"""Independent reference computations (pandas, TA-Lib, numpy) on raw CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


def log_returns_corr(a: pd.Series, b: pd.Series, window: int) -> pd.Series:
    """The issue's oracle: inner join, log returns, rolling Pearson correlation."""
    joined = pd.concat({"a": a, "b": b}, axis=1, join="inner")
    r = np.log(joined).diff()
    return r["a"].rolling(window).corr(r["b"])


def ols_residual_z(a: pd.Series, b: pd.Series, window: int) -> tuple[pd.Series, pd.Series]:
    """Residual z-score and beta by an explicit least-squares fit per window."""
    joined = pd.concat({"a": a, "b": b}, axis=1, join="inner")
    r = np.log(joined).diff()
    x, y = r["a"].to_numpy(), r["b"].to_numpy()
    z = np.full(len(r), np.nan)
    beta = np.full(len(r), np.nan)
    for end in range(window + 1, len(r) + 1):
        xs, ys = x[end - window : end], y[end - window : end]
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
