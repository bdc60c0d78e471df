"""Typed settings for the whole YAML file: one pydantic model per section."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from moodring.digest import wording
from moodring.digest.schedule import check_schedule, check_timezone
from moodring.market.timeframe import Timeframe
from moodring.metrics.altseason import ALTSEASON_COLUMNS, ExclusionRules
from moodring.metrics.divergence import Divergence
from moodring.metrics.moving import MACross
from moodring.rules.templates import TemplateError, check_template
from moodring.times import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Severity = Literal["info", "warning", "critical"]

DEFAULT_CONFIG = Path(__file__).with_name("defaults") / "moodring.yaml"


class Model(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable.

    Errors never echo the offending value: it may be a secret (a token in a URL).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class FeedConfig(Model):
    """One market data feed."""

    symbol: str
    source: Literal["ccxt", "yahoo", "alpaca", "finnhub"] = "ccxt"
    exchange: str = "binance"
    stream: Literal["trades", "ohlcv"] = "trades"
    market: Literal["crypto", "equity"] = "crypto"
    stale_after: Duration | None = None
    ws_url: str | None = None
    rest_url: str | None = None
    api_key: SecretStr | None = None  # keyed sources (alpaca, finnhub)
    api_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _keys_for_keyed_sources(self) -> FeedConfig:
        needed = {"finnhub": ("api_key",), "alpaca": ("api_key", "api_secret")}
        for key in needed.get(self.source, ()):
            if getattr(self, key) is None:
                raise ValueError(
                    f"{key}: source {self.source} needs it ({key}, {key}_file or "
                    f"{key}_credential; or MOODRING_FEEDS__<NAME>__{key.upper()})"
                )
        return self

    @property
    def round_the_clock(self) -> bool:
        """Return whether the market trades 24/7 (so an empty interval is a flat bar)."""
        return self.market == "crypto"


class RatioConfig(Model):
    """A derived close-only series: the first series divided by the second."""

    ratio: tuple[str, str]


class _MetricBase(Model):
    timeframe: str = "1d"
    outputs: ClassVar[tuple[str, ...]] = ("value",)

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
    outputs: ClassVar[tuple[str, ...]] = Divergence.outputs
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
    outputs: ClassVar[tuple[str, ...]] = MACross.outputs
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


def output_columns(name: str, metric: MetricConfig) -> tuple[str, ...]:
    """Return a metric's output names: its name, or ``name.output`` for several outputs."""
    if len(metric.outputs) == 1:
        return (name,)
    return tuple(f"{name}.{output}" for output in metric.outputs)


Band = tuple[float, float]


class Moving(Model):
    """A move of at least ``pct`` percent (or ``by`` units) within ``bars`` bars."""

    bars: int = Field(ge=1)
    pct: float | None = Field(None, gt=0)
    by: float | None = Field(None, gt=0)


class Condition(Model):
    """Exactly one operator and its operand."""

    above: float | None = None
    below: float | None = None
    inside: Band | None = None
    outside: Band | None = None
    equals: float | None = None
    crosses_above: float | None = None
    crosses_below: float | None = None
    enters: Band | None = None
    exits: Band | None = None
    moving_up_pct: Moving | None = None
    moving_down_pct: Moving | None = None
    moving_up: Moving | None = None
    moving_down: Moving | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(type(self).model_fields)
            raise ValueError(f"give exactly one operator (one of {names}); got {given or 'none'}")
        operand = getattr(self, given[0])
        if isinstance(operand, tuple) and operand[0] > operand[1]:
            raise ValueError(f"{given[0]}: the band [lo, hi] needs lo <= hi")
        if isinstance(operand, Moving):
            wanted = "pct" if given[0].endswith("_pct") else "by"
            if getattr(operand, wanted) is None:
                raise ValueError(f"{given[0]} needs {{{wanted}: ..., bars: ...}}")
        return self

    @property
    def operator(self) -> str:
        """Return the operator's name."""
        return next(n for n in type(self).model_fields if getattr(self, n) is not None)

    @property
    def operand(self) -> Any:
        """Return the operator's operand."""
        return getattr(self, self.operator)

    @property
    def is_edge(self) -> bool:
        """Return whether the operator fires on a change rather than holds as a level."""
        return self.operator not in ("above", "below", "inside", "outside", "equals")


class RuleConfig(Model):
    """One alert rule on a metric output."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    metric: str
    condition: Condition
    clear: Condition | None = None
    for_: int | str = Field(1, alias="for")
    on: Literal["close", "tick"] = "close"
    severity: Severity = "warning"
    send_resolved: bool = False
    repeat_interval: Duration | None = None
    cooldown: Duration | None = None
    chart: bool = False
    title: str = "{{ rule }}: {{ metric }} {{ state }}"
    message: str = "{{ metric }} = {{ value | round(4) }} (was {{ previous | round(4) }})"

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True
    )

    @field_validator("for_")
    @classmethod
    def _for_is_bars_or_duration(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 1:
                raise ValueError("for: at least 1 bar")
            return value
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _fields_fit_the_operator(self) -> RuleConfig:
        edge = self.condition.is_edge
        if edge and (self.clear or self.for_ != 1 or self.send_resolved or self.repeat_interval):
            raise ValueError(
                f"{self.condition.operator} is an edge operator: it fires once per crossing, "
                "so clear, for, send_resolved and repeat_interval do not apply"
            )
        if self.clear is not None and self.clear.is_edge:
            raise ValueError("clear takes a level operator (above, below, inside, outside)")
        if self.on == "tick" and self.for_ != 1:
            raise ValueError("for counts closed bars: it applies to on: close rules only")
        for field in ("title", "message"):
            try:
                check_template(getattr(self, field))
            except TemplateError as exc:
                raise ValueError(f"{field}: {exc}") from None
        return self


class NotifyTarget(Model):
    """An apprise URL (tgram://, slack://, json://, mailto:// …) and its routing tags."""

    url: SecretStr
    tags: tuple[str, ...] = ()
    # what the alert text is written in: plain text is escaped for the service's own format
    format: Literal["text", "markdown", "html"] = "text"

    @model_validator(mode="before")
    @classmethod
    def _plain_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _apprise_knows_it(cls, url: SecretStr) -> SecretStr:
        import apprise  # only configs with URLs pay for it

        quiet = logging.getLogger("apprise")
        was, quiet.disabled = quiet.disabled, True  # apprise logs bad URLs, secrets and all
        try:
            ok = apprise.Apprise.instantiate(url.get_secret_value()) is not None
        finally:
            quiet.disabled = was
        if not ok:
            scheme = url.get_secret_value().partition("://")[0] or "?"
            raise ValueError(f"apprise cannot use this {scheme}:// URL (check its form)")
        return url


DEFAULT_ROUTES: dict[str, tuple[str, ...]] = {
    "info": ("info",),
    "warning": ("warning",),
    "critical": ("critical",),
}


class NotifyConfig(Model):
    """Where alerts go and how delivery retries."""

    urls: tuple[NotifyTarget, ...] = ()
    # severity -> tags; a target with tags gets an alert when they meet; no tags: every alert
    routes: dict[Severity, tuple[str, ...]] = DEFAULT_ROUTES
    rate_per_minute: int = Field(20, ge=1)
    retry_initial: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 2.0
    retry_max: Duration = 300.0
    timeout: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 30.0
    # an alert not delivered this long after it was queued, or tried this often, is dead
    max_age: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 86_400.0
    max_attempts: int = Field(300, ge=1)

    @field_validator("routes", mode="before")
    @classmethod
    def _over_defaults(cls, routes: Any) -> Any:
        return {**DEFAULT_ROUTES, **routes} if isinstance(routes, dict) else routes

    @model_validator(mode="after")
    def _retry_bounds(self) -> NotifyConfig:
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must not be shorter than retry_initial")
        return self


class MqttConfig(Model):
    """The MQTT broker moodring publishes metrics, bars, alerts and feed states to."""

    host: str | None = None  # no host: MQTT is off
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    client_id: str | None = None
    prefix: str = Field("moodring", pattern=r"^[^#+]+$")
    keepalive: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 60.0
    forming_interval: Duration = 5.0  # forming-bar values at most this often per metric
    alert_queue: int = Field(1000, ge=1)  # alerts kept while the broker is unreachable
    discovery: bool = False  # Home Assistant MQTT discovery


class HttpConfig(Model):
    """The HTTP endpoint serving /metrics (Prometheus) and /healthz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9701, ge=0, le=65535)


class AltseasonConfig(Model):
    """The Altcoin Season Index: the share of the top altcoins that beat BTC over ``days``.

    The universe is ranked by quote volume on ``exchange``'s ``quote`` markets; BTC,
    stablecoins, wrapped and leveraged tokens are left out (see moodring.metrics.altseason).
    """

    exchange: str = "binance"
    quote: str = "USDT"
    top: int = Field(50, ge=1)  # coins in the universe
    days: int = Field(90, ge=1)  # performance horizon in calendar days
    volume_days: int = Field(30, ge=1)  # trailing days of close * volume that rank the coins
    exclude: tuple[str, ...] = ()  # base assets to leave out besides the defaults
    include: tuple[str, ...] = ()  # base assets to keep despite the default lists and patterns
    # how often the universe is re-ranked from tickers (each closed UTC day refreshes too)
    refresh: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 86400.0
    btc: str = "BTC/USDT"  # the benchmark: a feed name or a market symbol
    ws_url: str | None = None  # the exchange's endpoints, overridden (testnet, proxy, fake)
    rest_url: str | None = None

    @field_validator("exclude", "include")
    @classmethod
    def _upper(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip().upper() for name in names)

    @model_validator(mode="after")
    def _overrides_agree(self) -> AltseasonConfig:
        both = sorted(set(self.exclude) & set(self.include))
        if both:
            raise ValueError(f"{', '.join(both)} both excluded and included")
        if "BTC" in self.include:
            raise ValueError("include: BTC is the benchmark, not a member")
        return self

    def rules(self) -> ExclusionRules:
        """Return the exclusion overrides for the index."""
        return ExclusionRules.of(self.exclude, self.include)


class DigestConfig(Model):
    """The scheduled digest: when it is sent, its wording, and the metrics it reads.

    A metric left at its default name may be missing from the config (its part reads n/a);
    any other name must exist.
    """

    schedule: Annotated[str, AfterValidator(check_schedule)] = "0 13 * * *"
    timezone: Annotated[str, AfterValidator(check_timezone)] = "UTC"
    title: str = wording.DEFAULT_TITLE
    message: str = wording.DEFAULT_MESSAGE
    chart: bool = True
    severity: Severity = "info"
    correlation: tuple[str, ...] = Field(("eth_rut_corr", "eth_rut_corr_90"), max_length=2)
    ratio_change: tuple[str, ...] = Field(("ethbtc_chg_30", "ethbtc_chg_90"), max_length=2)
    breakout: str = "ethbtc_breakout"
    mfi: str = "eth_mfi"
    mfi_band: Band = (50.0, 80.0)
    divergence: str = "eth_rut_divergence"
    altseason: str = "altseason_index"

    @field_validator("title", "message")
    @classmethod
    def _template_compiles(cls, text: str) -> str:
        try:
            check_template(text)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return text

    def metric_names(self) -> dict[str, str]:
        """Return each metric the digest reads and the key naming it (``correlation.1``)."""
        names: dict[str, str] = {}
        for key, name, _ in self._references():
            names.setdefault(name, key)
        return names

    def check_references(self, known: Iterable[str]) -> None:
        """Raise ValueError for an unknown metric (but a default one) or template name."""
        known = set(known)
        heads = {column.partition(".")[0] for column in known}
        for key, name, default in self._references():
            # the divergence is read output by output (``name.residual_z``); the rest whole
            found = name in heads - known if key == "divergence" else name in known
            if name != default and not found:
                raise ValueError(
                    f"digest.{key}: unknown metric {name!r} (known: {', '.join(sorted(heads))})"
                )
        for field in ("title", "message"):
            try:
                check_template(getattr(self, field), heads | wording.NAMES)
            except TemplateError as exc:
                raise ValueError(f"digest.{field}: {exc}") from None

    def _references(self) -> list[tuple[str, str, str | None]]:
        """Return (key, metric name, the key's default name) for every metric named."""
        out = []
        for key in ("correlation", "ratio_change", "breakout", "mfi", "divergence", "altseason"):
            value, default = getattr(self, key), type(self).model_fields[key].default
            if isinstance(value, tuple):
                slots = (*default, None, None)
                out += [(f"{key}.{i}", name, slots[i]) for i, name in enumerate(value)]
            else:
                out.append((key, value, default))
        return out


class Settings(BaseSettings):
    """The whole configuration: feeds, derived series and metrics."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="MOODRING_",
        env_nested_delimiter="__",
        hide_input_in_errors=True,
    )

    feeds: dict[str, FeedConfig]
    series: dict[str, RatioConfig] = {}
    metrics: dict[str, MetricConfig] = {}
    rules: tuple[RuleConfig, ...] = ()
    notify: NotifyConfig = NotifyConfig()
    mqtt: MqttConfig = MqttConfig()
    http: HttpConfig = HttpConfig()
    altseason: AltseasonConfig | None = None
    digest: DigestConfig | None = None
    state_dir: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Validate exactly the values given: ``load_settings`` merges the environment itself."""
        return (init_settings,)

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
        columns = self.metric_columns()
        clash = sorted(set(columns) & set(self.altseason_columns()))
        if clash:
            raise ValueError(f"metrics: {', '.join(clash)} is the altseason section's name")
        known = [*columns, *self.altseason_columns()]
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(f"rules.{i}.name: {rule.name!r} is used twice")
            seen.add(rule.name)
            if rule.metric not in known:
                raise ValueError(
                    f"rules.{i}.metric: unknown metric output {rule.metric!r} "
                    f"(known: {', '.join(known)})"
                )
            names = {column.partition(".")[0] for column in known}
            for field in ("title", "message"):
                try:
                    check_template(getattr(rule, field), names)
                except TemplateError as exc:
                    raise ValueError(f"rules.{i}.{field}: {exc}") from None
        if self.digest is not None:
            self.digest.check_references(known)
        return self

    def resolved_state_dir(self) -> Path:
        """Return the state directory: configured, systemd's, XDG's, or ~/.local/state."""
        if self.state_dir is not None:
            return self.state_dir
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        return Path(base) / "moodring"

    def metric_columns(self) -> dict[str, str]:
        """Return every metric output name and the metric it belongs to."""
        return {
            column: name
            for name, metric in self.metrics.items()
            for column in output_columns(name, metric)
        }

    def altseason_columns(self) -> tuple[str, ...]:
        """Return the altseason metric names rules may use: none without the section."""
        return ALTSEASON_COLUMNS if self.altseason is not None else ()

    def rule_bars(self, rule: RuleConfig) -> int:
        """Return a rule's ``for`` in bars of its metric's timeframe (durations round up)."""
        if isinstance(rule.for_, int):
            return rule.for_
        bar_s = Timeframe.parse(self.column_timeframe(rule.metric)).ms / 1000
        return max(1, math.ceil(parse_duration(rule.for_) / bar_s))

    def feeds_of(self, series: Iterable[str]) -> tuple[str, ...]:
        """Return the feeds under these series (a feed itself, or a ratio's two legs)."""
        legs: list[str] = []
        for name in series:
            ratio = self.series.get(name)
            legs.extend(ratio.ratio if ratio else (name,))
        return tuple(dict.fromkeys(legs))

    def stale_feeds_of(self, rule: RuleConfig) -> tuple[str, ...]:
        """Return the feeds a rule's metric reads (directly or through a ratio)."""
        metric = self.metrics.get(self.metric_columns().get(rule.metric, ""))
        return self.feeds_of(metric.inputs()) if metric is not None else ()

    def column_timeframe(self, column: str) -> str:
        """Return the bar length of a metric output (the altseason index is daily)."""
        metric = self.metrics.get(self.metric_columns().get(column, ""))
        return metric.timeframe if metric is not None else "1d"
