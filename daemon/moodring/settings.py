"""Typed settings for the whole YAML file: one pydantic model per section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from moodring.market.timeframe import Timeframe

DEFAULT_CONFIG = Path(__file__).with_name("defaults") / "moodring.yaml"


class Model(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedConfig(Model):
    """One market data feed."""

    symbol: str
    source: Literal["ccxt", "yahoo", "alpaca", "finnhub"] = "ccxt"
    exchange: str = "binance"
    stream: Literal["trades", "ohlcv"] = "trades"
    market: Literal["crypto", "equity"] = "crypto"

    @property
    def round_the_clock(self) -> bool:
        """Return whether the market trades 24/7 (so an empty interval is a flat bar)."""
        return self.market == "crypto"


class RatioConfig(Model):
    """A derived close-only series: the first series divided by the second."""

    ratio: tuple[str, str]


class _MetricBase(Model):
    timeframe: str = "1d"

    @field_validator("timeframe")
    @classmethod
    def _valid_timeframe(cls, value: str) -> str:
        return Timeframe.parse(value).name

    def inputs(self) -> tuple[str, ...]:
        """Return the names of the series this metric reads."""
        raise NotImplementedError

    def history(self) -> int:
        """Return how many closed bars of each input the metric looks back over."""
        raise NotImplementedError


class _Single(_MetricBase):
    series: str

    def inputs(self) -> tuple[str, ...]:
        """Return the names of the series this metric reads."""
        return (self.series,)


class _Pair(_MetricBase):
    a: str
    b: str

    def inputs(self) -> tuple[str, ...]:
        """Return the names of the series this metric reads."""
        return (self.a, self.b)


class CorrelationConfig(_Pair):
    """Pearson correlation of log returns of a and b on bars joined by open time."""

    type: Literal["correlation"]
    window: int = Field(30, ge=2)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.window + 1


class DivergenceConfig(_Pair):
    """Residual z-score, opposite moves and swing structure of a against b."""

    type: Literal["divergence"]
    window: int = Field(30, ge=2)
    lookback: int = Field(20, ge=2)
    threshold: float = Field(0.05, ge=0)

    def history(self) -> int:
        """Return the bars looked back over."""
        return max(self.window + 1, 2 * self.lookback)


class MFIConfig(_Single):
    """TA-Lib's Money Flow Index."""

    type: Literal["mfi"]
    period: int = Field(14, ge=2)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.period + 1


class BreakoutConfig(_Single):
    """+1/-1 when the close leaves the previous ``lookback`` bars' range."""

    type: Literal["breakout"]
    lookback: int = Field(20, ge=1)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.lookback + 1


class AverageConfig(_Single):
    """A simple or exponential moving average of the close."""

    type: Literal["sma", "ema"]
    period: int = Field(ge=1)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.period


class PctChangeConfig(_Single):
    """Percent change of the close over ``lookback`` bars."""

    type: Literal["pct_change"]
    lookback: int = Field(ge=1)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.lookback + 1


class ZScoreConfig(_Single):
    """Z-score of the close over ``window`` bars."""

    type: Literal["zscore"]
    window: int = Field(ge=2)

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.window


class MACrossConfig(_Single):
    """Spread and position of a fast against a slow moving average."""

    type: Literal["ma_cross"]
    fast: int = Field(ge=1)
    slow: int = Field(ge=2)
    kind: Literal["sma", "ema"] = "sma"

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MACrossConfig:
        if self.fast >= self.slow:
            raise ValueError("fast must be shorter than slow")
        return self

    def history(self) -> int:
        """Return the bars looked back over."""
        return self.slow


MetricConfig = Annotated[
    CorrelationConfig
    | DivergenceConfig
    | MFIConfig
    | BreakoutConfig
    | AverageConfig
    | PctChangeConfig
    | ZScoreConfig
    | MACrossConfig,
    Field(discriminator="type"),
]


class Settings(BaseSettings):
    """The whole configuration: feeds, derived series and metrics."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix="MOODRING_", env_nested_delimiter="__"
    )

    feeds: dict[str, FeedConfig]
    series: dict[str, RatioConfig] = {}
    metrics: dict[str, MetricConfig] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read environment overrides first, then the values passed in (the YAML file)."""
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _references_resolve(self) -> Settings:
        names = set(self.feeds) | set(self.series)
        clash = set(self.feeds) & set(self.series)
        if clash:
            raise ValueError(f"series names clash with feed names: {sorted(clash)}")
        for name, ratio in self.series.items():
            for i, leg in enumerate(ratio.ratio):
                if leg not in self.feeds:
                    raise ValueError(f"series.{name}.ratio.{i}: unknown feed {leg!r}")
        for name, metric in self.metrics.items():
            fields = ("series",) if isinstance(metric, _Single) else ("a", "b")
            for field in fields:
                ref = getattr(metric, field)
                if ref not in names:
                    raise ValueError(
                        f"metrics.{name}.{field}: unknown series {ref!r} "
                        f"(known: {', '.join(sorted(names))})"
                    )
            if isinstance(metric, MFIConfig) and metric.series in self.series:
                raise ValueError(
                    f"metrics.{name}.series: MFI needs volume, but {metric.series!r} is a ratio"
                )
        return self


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and key paths."""


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate a YAML config (the built-in default when ``path`` is None)."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    try:
        raw = YamlConfigSettingsSource(Settings, yaml_file=file)()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from exc
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(file, exc)) from exc


def format_errors(file: Path, exc: ValidationError) -> str:
    """Render pydantic's errors as one readable block, one ``key.path: message`` a line."""
    lines = [f"{file}: invalid configuration ({exc.error_count()} error(s))"]
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"] if not _is_union_tag(p))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        lines.append(f"  {path or '<root>'}: {message}")
    return "\n".join(lines)


def _is_union_tag(part: Any) -> bool:
    """Return whether a location part is pydantic's tag of a metric type, not a key."""
    return isinstance(part, str) and part in _METRIC_TYPES


_METRIC_TYPES = frozenset(
    tag
    for model in get_args(get_args(MetricConfig)[0])
    for tag in get_args(model.model_fields["type"].annotation)
)


def config_path_from_env() -> Path | None:
    """Return ``$MOODRING_CONFIG`` as a path, if set."""
    value = os.environ.get("MOODRING_CONFIG")
    return Path(value) if value else None
