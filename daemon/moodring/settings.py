"""Typed settings for the whole YAML file: one pydantic model per section.

Models only: what higher packages define comes in through registries they fill when
imported (the feed sources of ``moodring.feeds``, the metric types of ``moodring.metrics``,
the template and schedule checks of ``moodring.rules`` and ``moodring.digest``);
``moodring.configfile`` imports them all, and so must anything else that validates settings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    SecretStr,
    SerializeAsAny,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from moodring.market.timeframe import Timeframe
from moodring.notifyurls import url_facts
from moodring.operators import EDGES, LEVELS, OPERATORS, Band
from moodring.registry import Registry
from moodring.times import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Severity = Literal["info", "warning", "critical"]

DEFAULT_CONFIG = Path(__file__).with_name("defaults") / "moodring.yaml"

# Checks of values whose rules live in higher packages; validators look them up when they
# run. Each raises ValueError saying what is wrong:
#   "template" (text, names=None): a rule template compiles (and names only ``names``)
#   "digest template" (text, metric names): a digest template names only what it may
#   "schedule" (cron expression), "timezone" (IANA name): the digest's schedule
CHECKS: Registry[Callable[..., object]] = Registry(
    "config check", "moodring.rules.templates and moodring.digest"
)


def check(name: str, *args: Any) -> None:
    """Run the registered check ``name`` on ``args`` (ValueError when the value is bad)."""
    CHECKS[name](*args)


def _checked(name: str) -> Callable[[str], str]:
    """Return a validator running the check ``name`` on a string value."""

    def validate(value: str) -> str:
        check(name, value)
        return value

    return validate


class Model(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable.

    Errors never echo the offending value: it may be a secret (a token in a URL).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class FeedConfig(Model):
    """One market data feed: the keys of every source (each source's model adds its own).

    A source (``moodring.feeds.<source>``) registers its model in ``FEED_SOURCES``;
    ``feeds.<name>`` is validated by the model of its ``source`` (default ``ccxt``).
    """

    symbol: str
    source: str = "ccxt"
    market: Literal["crypto", "equity"] = "crypto"
    # an equity market's sessions (default nyse); none: no calendar (bars at any time)
    calendar: Literal["nyse", "none"] | None = None
    # a close this far (0.4 = 40 %) from the previous bar's marks the bar as suspect
    max_jump: float | None = Field(None, gt=0)
    stale_after: Duration | None = None
    ws_url: str | None = None
    rest_url: str | None = None

    @model_validator(mode="after")
    def _calendar_of_equity(self) -> FeedConfig:
        if self.market == "crypto" and self.calendar == "nyse":
            raise ValueError("calendar: a crypto market trades 24/7; calendars are for equity")
        return self

    @property
    def repeats_dropped(self) -> bool:
        """Return whether the feed drops repeated trades itself: its bars keep no trade ids."""
        return False

    @property
    def round_the_clock(self) -> bool:
        """Return whether the market trades 24/7 (so an empty interval is a flat bar)."""
        return self.market == "crypto"

    @property
    def session_calendar(self) -> str | None:
        """Return the name of the calendar the feed's bars follow (None: 24/7 or none given)."""
        if self.market == "equity" and self.calendar != "none":
            return self.calendar or "nyse"
        return None


# source name -> the model of its feeds; the sources register when moodring.feeds is imported
FEED_SOURCES: Registry[type[FeedConfig]] = Registry("feed source", "moodring.feeds")


def feed_config_model(source: object) -> type[FeedConfig]:
    """Return the model of a source's feeds, or raise ValueError naming the known sources."""
    if not FEED_SOURCES:
        raise LookupError("no feed sources are registered: import moodring.feeds first")
    if not isinstance(source, str) or source not in FEED_SOURCES:
        known = ", ".join(sorted(FEED_SOURCES))
        raise ValueError(f"source: unknown feed source {source!r} (known: {known})")
    return FEED_SOURCES[source]


def _feed_of_its_source(value: Any, handler: ValidatorFunctionWrapHandler) -> FeedConfig:
    """Validate a feed with the model of its ``source``; a key of another source is named."""
    if isinstance(value, FeedConfig):
        return value
    source = value.get("source", "ccxt") if isinstance(value, dict) else "ccxt"
    model = feed_config_model(source)
    if isinstance(value, dict):
        for key in value:
            if key in model.model_fields:
                continue
            owners = [name for name, m in sorted(FEED_SOURCES.items()) if key in m.model_fields]
            if owners:
                raise ValueError(
                    f"{key}: not a key of {source} feeds (only of {', '.join(owners)} feeds)"
                )
    return model.model_validate(value)


AnyFeedConfig = Annotated[SerializeAsAny[FeedConfig], WrapValidator(_feed_of_its_source)]


class RatioConfig(Model):
    """A derived close-only series: the first series divided by the second."""

    ratio: tuple[str, str]


class MetricConfig(Model):
    """The config of one metric; each metric type's model derives from it in its own module.

    A metric type registers in ``METRICS`` (the modules of ``moodring.metrics`` do, when
    imported): its config model, which names the series it reads and how many closed bars
    it looks back over, and what builds its indicator. ``Settings.metrics`` takes any
    registered type by its ``type`` key.
    """

    type: str
    timeframe: str = "1d"
    outputs: ClassVar[tuple[str, ...]] = ("value",)
    # the keys that name the series the metric reads
    input_keys: ClassVar[tuple[str, ...]] = ()
    # what config errors call the metric, and whether it reads volume (a ratio has none)
    label: ClassVar[str] = ""
    needs_volume: ClassVar[bool] = False

    @field_validator("timeframe")
    @classmethod
    def _valid_timeframe(cls, value: str) -> str:
        return Timeframe.parse(value).name

    def inputs(self) -> tuple[str, ...]:
        """Return the names of the series this metric reads."""
        return tuple(getattr(self, key) for key in self.input_keys)

    def history(self) -> int:
        """Return how many closed bars of each input the metric looks back over."""
        raise NotImplementedError


class SingleInput(MetricConfig):
    """A metric of one series."""

    input_keys: ClassVar[tuple[str, ...]] = ("series",)
    series: str


class PairInput(MetricConfig):
    """A metric of two series, ``a`` and ``b``, on bars joined by open time."""

    input_keys: ClassVar[tuple[str, ...]] = ("a", "b")
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class MetricType:
    """A kind of metric: its config model and what builds its indicator from such a config."""

    config: type[MetricConfig]
    build: Callable[[Any], object]


METRICS: Registry[MetricType] = Registry("metric type", "moodring.metrics")


class _RegisteredMetrics:
    """The discriminated union (on ``type``) of the registered config models.

    Built when ``Settings`` is first validated, so every metric module imported by then
    counts, and settings imports none of them.
    """

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        models = tuple(dict.fromkeys(kind.config for kind in METRICS.values()))
        if not models:
            raise LookupError("no metric types are registered: import moodring.metrics first")
        if len(models) == 1:
            return handler.generate_schema(models[0])
        union = functools.reduce(operator.or_, models)
        return handler.generate_schema(Annotated[union, Field(discriminator="type")])


def output_columns(name: str, metric: MetricConfig) -> tuple[str, ...]:
    """Return a metric's output names: its name, or ``name.output`` for several outputs."""
    if len(metric.outputs) == 1:
        return (name,)
    return tuple(f"{name}.{output}" for output in metric.outputs)


# A chart shows one panel per metric; a charted composite reads at most this many.
MAX_CHART_PANELS = 6
GROUPS = ("all", "any")


class _ItemModel(Model):
    """One part of a composite condition: ``{metric, <level operator>}`` or a nested group.

    Its keys are ``metric``, one per level operator of ``moodring.operators`` and the groups.
    """

    @model_validator(mode="before")
    @classmethod
    def _no_edges(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if key in EDGES:
                    raise ValueError(
                        f"{key}: an item takes a level operator ({', '.join(LEVELS)}); "
                        f"{key} fires on a change, so it cannot hold together with others"
                    )
        return value

    @model_validator(mode="after")
    def _metric_and_one_level(self) -> _ItemModel:
        levels = [name for name in LEVELS if getattr(self, name) is not None]
        groups = [name for name in GROUPS if getattr(self, name) is not None]
        if groups:
            if getattr(self, "metric", None) is not None or levels or len(groups) > 1:
                raise ValueError(
                    "an item is either {metric, <level operator>} or one group "
                    "({all: [...]} or {any: [...]})"
                )
            if not getattr(self, groups[0]):
                raise ValueError(f"{groups[0]}: give at least one item")
            return self
        if getattr(self, "metric", None) is None:
            raise ValueError("metric: missing (an item is {metric: NAME, <level operator>: ...})")
        if len(levels) != 1:
            raise ValueError(
                f"give exactly one level operator (one of {', '.join(LEVELS)}); "
                f"got {levels or 'none'}"
            )
        OPERATORS[levels[0]].check(getattr(self, levels[0]))
        return self

    @property
    def group(self) -> str | None:
        """Return ``all`` or ``any`` for a nested group, None for a metric item."""
        return next((name for name in GROUPS if getattr(self, name) is not None), None)

    @property
    def items(self) -> tuple[Item, ...]:
        """Return a group's items (none for a metric item)."""
        group = self.group
        return getattr(self, group) if group else ()

    @property
    def condition(self) -> Condition:
        """Return a metric item's level operator as a condition."""
        name = next(name for name in LEVELS if getattr(self, name) is not None)
        return Condition.model_validate({name: getattr(self, name)})


def check_nesting(group: str, items: tuple[Item, ...]) -> None:
    """Raise ValueError naming the item where a group is empty or nests more than one level."""
    if not items:
        raise ValueError(f"{group}: give at least one item")
    for i, item in enumerate(items):
        for j, inner in enumerate(item.items):
            if inner.group:
                raise ValueError(
                    f"{group}.{i}.{item.group}.{j}: groups nest one level "
                    "(an any inside an all, or an all inside an any)"
                )


class _ConditionModel(Model):
    """Exactly one operator and its operand; ``all``/``any`` hold a composite's items.

    Its keys are the operators of ``moodring.operators``, then the groups.
    """

    @model_validator(mode="after")
    def _exactly_one(self) -> _ConditionModel:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(type(self).model_fields)
            raise ValueError(f"give exactly one operator (one of {names}); got {given or 'none'}")
        name, operand = given[0], getattr(self, given[0])
        if name in GROUPS:
            check_nesting(name, operand)
        else:
            OPERATORS[name].check(operand)
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
        return self.operator in EDGES

    @property
    def is_group(self) -> bool:
        """Return whether this is a composite's ``all``/``any`` list of items."""
        return self.operator in GROUPS

    def metric_items(self, prefix: str = "") -> list[tuple[str, Item]]:
        """Return a group's metric items with their key paths (``all.2.any.0``), in order."""
        if not self.is_group:
            return []
        out = []
        for i, item in enumerate(self.operand):
            path = f"{prefix}{self.operator}.{i}"
            if item.group is None:
                out.append((path, item))
            else:
                out += [(f"{path}.{item.group}.{j}", inner) for j, inner in enumerate(item.items)]
        return out

    def describe(self) -> str:
        """Return a group's structure without thresholds: ``all(a,any(b,c))``."""

        def shape(kind: str, items: tuple[Item, ...]) -> str:
            parts = [i.metric if i.group is None else shape(i.group, i.items) for i in items]
            return f"{kind}({','.join(str(p) for p in parts)})"

        return shape(self.operator, self.operand) if self.is_group else self.operator


def _optional(kind: Any) -> Any:
    """Return a field spec of an optional ``kind``, absent by default."""
    return (kind | None, None)


if TYPE_CHECKING:

    class Item(_ItemModel):
        """One part of a composite condition (see ``_ItemModel``)."""

        metric: str | None
        all: tuple[Item, ...] | None
        any: tuple[Item, ...] | None

    class Condition(_ConditionModel):
        """One operator and its operand (see ``_ConditionModel``)."""

        all: tuple[Item, ...] | None
        any: tuple[Item, ...] | None

else:
    # the operator keys come from the table: a new operator is a new key here
    Item = create_model(
        "Item",
        __base__=_ItemModel,
        __module__=__name__,
        metric=_optional(str),
        **{name: _optional(OPERATORS[name].operand) for name in LEVELS},
        **{group: _optional(tuple["Item", ...]) for group in GROUPS},
    )
    Item.model_rebuild()
    Condition = create_model(
        "Condition",
        __base__=_ConditionModel,
        __module__=__name__,
        **{name: _optional(op.operand) for name, op in OPERATORS.items()},
        **{group: _optional(tuple[Item, ...]) for group in GROUPS},
    )


class RuleConfig(Model):
    """One alert rule: a metric output and a condition, or a composite of items (all/any)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    metric: str | None = None
    condition: Condition | None = None
    all: tuple[Item, ...] | None = None
    any: tuple[Item, ...] | None = None
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

    @model_validator(mode="before")
    @classmethod
    def _on_is_a_key(cls, value: Any) -> Any:
        """Take YAML 1.1's ``on:`` key (read as the boolean true) as ``on``."""
        if isinstance(value, dict) and any(key is True for key in value):
            return {"on" if key is True else key: item for key, item in value.items()}
        return value

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
        if self.is_composite:
            self._composite_fits()
        elif self.metric is None or self.condition is None:
            missing = "metric" if self.metric is None else "condition"
            raise ValueError(
                f"{missing}: missing (a rule has metric + condition, or a list of items under "
                "all or any)"
            )
        else:
            self._single_fits(self.condition)
        if self.on == "tick" and self.for_ != 1:
            raise ValueError("for counts closed bars: it applies to on: close rules only")
        for field in ("title", "message"):
            try:
                check("template", getattr(self, field))
            except ValueError as exc:
                raise ValueError(f"{field}: {exc}") from None
        return self

    def _single_fits(self, condition: Condition) -> None:
        if condition.is_group:
            raise ValueError(
                f"condition.{condition.operator}: a composite's items go at the rule's top "
                f"level ({condition.operator}: [...]) in place of metric and condition"
            )
        edge = condition.is_edge
        if edge and (self.clear or self.for_ != 1 or self.send_resolved or self.repeat_interval):
            raise ValueError(
                f"{condition.operator} is an edge operator: it fires once per crossing, "
                "so clear, for, send_resolved and repeat_interval do not apply"
            )
        if self.clear is not None and (self.clear.is_edge or self.clear.is_group):
            raise ValueError("clear takes a level operator (above, below, inside, outside)")

    def _composite_fits(self) -> None:
        given = [key for key in ("metric", "condition") if getattr(self, key) is not None]
        if given:
            raise ValueError(
                f"{given[0]}: a rule has metric + condition, or items under all/any, not both"
            )
        if self.all is not None and self.any is not None:
            raise ValueError("any: give all or any at the top; nest the other inside it")
        group = self.when
        check_nesting(group.operator, group.operand)
        if self.clear is not None and not self.clear.is_group:
            raise ValueError("clear: a composite clears on items too: {all: [...]} or {any: [...]}")
        if self.on == "tick":
            raise ValueError("on: a composite is judged on closed bars (on: close) only")
        if self.chart and len(self.columns()) > MAX_CHART_PANELS:
            raise ValueError(
                f"chart: a chart shows at most {MAX_CHART_PANELS} metrics; "
                f"this rule reads {len(self.columns())}"
            )

    @property
    def is_composite(self) -> bool:
        """Return whether the rule is a list of items (all/any) rather than one metric."""
        return self.all is not None or self.any is not None

    @property
    def when(self) -> Condition:
        """Return what must hold: the condition, or the composite's list as a group."""
        if self.condition is not None:
            return self.condition
        key = "all" if self.all is not None else "any"
        return Condition.model_validate({key: getattr(self, key)})

    def metric_items(self) -> list[tuple[str, Item]]:
        """Return a composite's metric items with key paths (``all.1``, ``clear.any.0``)."""
        items = self.when.metric_items()
        if self.clear is not None:
            items += self.clear.metric_items("clear.")
        return items

    def columns(self) -> tuple[str, ...]:
        """Return every metric output the rule reads, its own metric (or first item's) first."""
        if not self.is_composite:
            return (str(self.metric),)
        return tuple(dict.fromkeys(str(item.metric) for _, item in self.metric_items()))

    @property
    def subject(self) -> str:
        """Return what the rule judges: its metric output, or a composite's shape."""
        return str(self.metric) if not self.is_composite else self.when.describe()


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
        if not url_facts(url.get_secret_value())["usable"]:
            scheme = url.get_secret_value().partition("://")[0] or "?"
            raise ValueError(f"apprise cannot use this {scheme}:// URL (check its form)")
        return url


DEFAULT_ROUTES: dict[Severity, tuple[str, ...]] = {
    "info": ("info",),
    "warning": ("warning",),
    "critical": ("critical",),
}


class NotifyConfig(Model):
    """Where alerts go and how delivery retries."""

    urls: tuple[NotifyTarget, ...] = ()
    # apprise config files (relative to the config's folder) or config URLs: their URLs,
    # with their tags, are added to urls when the config is loaded
    config: tuple[str, ...] = ()
    # severity -> tags; a target with tags gets an alert when they meet; no tags: every alert
    routes: dict[Severity, tuple[str, ...]] = DEFAULT_ROUTES
    rate_per_minute: int = Field(20, ge=1)
    retry_initial: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 2.0
    retry_max: Duration = 300.0
    timeout: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 30.0
    # alerts of bars closed while moodring was down go out (marked late) up to this old
    late_max_age: Duration = 6 * 3600.0
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
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+]+$")
    # where Home Assistant says `online` when it starts (its birth message): announce again
    discovery_status_topic: str = Field("homeassistant/status", pattern=r"^[^#+]+$")


class HttpConfig(Model):
    """The HTTP endpoint serving /metrics (Prometheus) and /healthz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9701, ge=0, le=65535)


# The altseason section's metric names rules may use: the index, and the universe size.
ALTSEASON_COLUMNS = ("altseason_index", "altseason_members")


@dataclass(frozen=True, slots=True)
class ExclusionRules:
    """Overrides of the default exclusions: ``exclude`` adds base assets, ``include`` keeps them.

    ``include`` wins over the default lists and patterns but not over ``exclude``, and BTC
    (the benchmark) cannot be included (see ``moodring.metrics.altseason.excluded``).
    """

    exclude: frozenset[str] = frozenset()
    include: frozenset[str] = frozenset()

    @classmethod
    def of(cls, exclude: Iterable[str] = (), include: Iterable[str] = ()) -> ExclusionRules:
        """Build rules from base asset names in any case."""
        return cls(frozenset(s.upper() for s in exclude), frozenset(s.upper() for s in include))


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


WATCHLIST_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class WatchlistConfig(Model):
    """A watchlist: explicit market symbols, or the ``top`` markets of an exchange by volume.

    Explicit: ``members`` (``[SOL/USDT, BNB/USDT]``; a bare list is short for it). Dynamic:
    the ``top`` markets of ``exchange``'s ``quote`` markets by quote volume over the last
    ``volume_days``, ranked as the Altcoin Season Index ranks its universe (BTC,
    stablecoins, wrapped and leveraged tokens left out; ``exclude``/``include`` adjust the
    lists), re-ranked every ``refresh`` (the daemon asks ``exchange``'s REST API, at
    ``rest_url`` when given: a testnet, proxy or fake). Feeds, series, metrics and rules
    declared ``for_each`` watchlist are expanded per member (``moodring.expansion``).
    """

    members: tuple[str, ...] = ()
    top: int | None = Field(None, ge=1)
    exchange: str = "binance"
    quote: str = "USDT"
    volume_days: int = Field(30, ge=1)
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    refresh: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 86400.0
    rest_url: str | None = None  # the exchange's REST endpoint, overridden (testnet, proxy, fake)

    @model_validator(mode="before")
    @classmethod
    def _list_is_members(cls, value: Any) -> Any:
        return {"members": value} if isinstance(value, list | tuple) else value

    @field_validator("members")
    @classmethod
    def _symbols(cls, members: tuple[str, ...]) -> tuple[str, ...]:
        symbols = tuple(Member.of(symbol).symbol for symbol in members)
        twice = sorted({s for s in symbols if symbols.count(s) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice")
        return symbols

    @field_validator("quote", "exclude", "include")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().upper()
        return tuple(name.strip().upper() for name in value)

    @model_validator(mode="after")
    def _explicit_or_dynamic(self) -> WatchlistConfig:
        if self.dynamic:
            if self.members:
                raise ValueError("give members (explicit) or top (dynamic), not both")
            both = sorted(set(self.exclude) & set(self.include))
            if both:
                raise ValueError(f"{', '.join(both)} both excluded and included")
            if "BTC" in self.include:
                raise ValueError(
                    "include: a dynamic watchlist ranks altcoins, BTC is left out "
                    "(watch it with a feed of its own)"
                )
            return self
        if not self.members:
            raise ValueError(
                "give members ([SOL/USDT, ...]) or top (the busiest markets of an exchange)"
            )
        dynamic_keys = [k for k in ("exclude", "include") if getattr(self, k)]
        dynamic_keys += [k for k in ("volume_days", "refresh") if k in self.model_fields_set]
        if dynamic_keys:
            raise ValueError(f"{dynamic_keys[0]}: only a dynamic watchlist (top: N) takes it")
        return self

    @property
    def dynamic(self) -> bool:
        """Return whether the members are ranked at run time (``top``) rather than listed."""
        return self.top is not None

    def rules(self) -> ExclusionRules:
        """Return a dynamic watchlist's exclusion overrides (as the Altcoin Season Index's)."""
        return ExclusionRules.of(self.exclude, self.include)


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a watchlist: a market symbol and its base and quote currencies."""

    symbol: str  # SOL/USDT
    base: str  # SOL
    quote: str  # USDT

    @classmethod
    def of(cls, symbol: str) -> Member:
        """Parse ``BASE/QUOTE`` (any case); ValueError naming the symbol otherwise."""
        base, slash, quote = str(symbol).strip().upper().partition("/")
        if not slash or not base.isalnum() or not quote.isalnum():
            raise ValueError(f"{symbol!r}: give a member as BASE/QUOTE, e.g. SOL/USDT")
        return cls(f"{base}/{quote}", base, quote)


@dataclass(frozen=True, slots=True)
class Expanded:
    """Where an expanded feed, series, metric or rule came from: its template and member."""

    section: str  # feeds, series, metrics or rules
    template: str  # the template's name as written: ``{base}-decoupling``
    watchlist: str
    member: Member


@dataclass(frozen=True)
class Expansion:
    """How a config's ``for_each`` templates were expanded (see ``moodring.expansion``).

    ``written`` holds the values as written (templates unexpanded, after the environment's
    overrides of written keys); ``late`` the environment's overrides of expanded entries and
    ``base`` the config's folder, so the same config can be expanded for other members.
    """

    # settings compare equal when they expand to the same: what they were written as aside
    written: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    members: dict[str, tuple[Member, ...]] = dataclasses.field(default_factory=dict)
    names: dict[tuple[str, str], Expanded] = dataclasses.field(default_factory=dict)
    late: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    base: Path | None = dataclasses.field(default=None, compare=False)

    def templates(self, section: str) -> dict[str, str]:
        """Return each template of a section (its name as written) and its watchlist."""
        found: dict[str, str] = {}
        entries = self.written.get(section)
        items = enumerate(entries) if isinstance(entries, list) else (entries or {}).items()
        for key, entry in items:
            if isinstance(entry, dict) and isinstance(entry.get(FOR_EACH), str):
                name = entry.get("name") if section == "rules" else key
                found[str(name)] = entry[FOR_EACH]
        return found


# the key of a feed, series, metric or rule that makes it a template over a watchlist
FOR_EACH = "for_each"


DIGEST_TITLE = "moodring digest {{ date }}"

DIGEST_MESSAGE = (
    "ETH {{ correlation.trend }} small caps ({{ correlation.window }} corr "
    "{{ num(correlation.value) }}, {{ correlation.move }} {{ num(correlation.week_ago) }} a week "
    "ago; {{ correlation.long_window }} {{ num(correlation.long) }}) while ETH/BTC "
    "{{ ratio.trend }} ({{ pct(ratio.change) }} in {{ ratio.period }}, "
    "{{ pct(ratio.change_long) }} in {{ ratio.period_long }}; {{ ratio.breakout_state }}); "
    "MFI {{ num(mfi.value, 0) }} — {{ mfi.band }}; Altcoin Season Index "
    "{% if altseason.value is none %}n/a{% else %}{{ num(altseason.value, 0) }} "
    "({{ altseason.label }}, {{ signed(altseason.change, 0) }} this week){% endif %}.\n"
    "Divergence: {{ divergence.state }}.\n"
    "Firing: {{ firing | join(', ') or 'none' }}."
    "{% if recent %} Fired this week: {{ recent | join(', ') }}.{% endif %}"
    "{% for line in watchlists %}\n{{ line.text }}{% endfor %}"
)


class DigestConfig(Model):
    """The scheduled digest: when it is sent, its wording, and the metrics it reads.

    A metric left at its default name may be missing from the config (its part reads n/a);
    any other name must exist.
    """

    schedule: Annotated[str, AfterValidator(_checked("schedule"))] = "0 13 * * *"
    timezone: Annotated[str, AfterValidator(_checked("timezone"))] = "UTC"
    title: str = DIGEST_TITLE
    message: str = DIGEST_MESSAGE
    chart: bool = True
    severity: Severity = "info"
    correlation: tuple[str, ...] = Field(("eth_rut_corr", "eth_rut_corr_90"), max_length=2)
    ratio_change: tuple[str, ...] = Field(("ethbtc_chg_30", "ethbtc_chg_90"), max_length=2)
    breakout: str = "ethbtc_breakout"
    mfi: str = "eth_mfi"
    mfi_band: Band = (50.0, 80.0)
    divergence: str = "eth_rut_divergence"
    altseason: str = "altseason_index"
    # rule template of a watchlist (as written) -> what its firing members do, for the
    # watchlist section ("3 of 50 watched alts <are decoupling from the Russell 2000>: ...");
    # given, only these templates get a line
    watchlist: dict[str, str] = {}

    @field_validator("title", "message")
    @classmethod
    def _template_compiles(cls, text: str) -> str:
        check("template", text)
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
                check("digest template", getattr(self, field), heads)
            except ValueError as exc:
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
        # built at the first validation: by then the metric types have registered
        defer_build=True,
    )

    watchlists: dict[Annotated[str, Field(pattern=WATCHLIST_NAME)], WatchlistConfig] = {}
    feeds: dict[str, AnyFeedConfig]
    series: dict[str, RatioConfig] = {}
    metrics: dict[str, Annotated[MetricConfig, _RegisteredMetrics()]] = {}
    rules: tuple[RuleConfig, ...] = ()
    notify: NotifyConfig = NotifyConfig()
    mqtt: MqttConfig = MqttConfig()
    http: HttpConfig = HttpConfig()
    altseason: AltseasonConfig | None = None
    digest: DigestConfig | None = None
    state_dir: Path | None = None
    # how the for_each templates were expanded (set by moodring.expansion; none: no templates)
    _expansion: Expansion | None = PrivateAttr(default=None)

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
            for key in metric.input_keys:
                ref = getattr(metric, key)
                if ref not in names:
                    raise ValueError(
                        f"metrics.{name}.{key}: unknown series {ref!r} "
                        f"(known: {', '.join(sorted(names))})"
                    )
                if metric.needs_volume and ref in self.series:
                    raise ValueError(
                        f"metrics.{name}.{key}: {metric.label} needs volume, but {ref!r} is a ratio"
                    )
        columns = self.metric_columns()
        taken = sorted(set(columns) & set(self.altseason_columns()))
        if taken:
            raise ValueError(f"metrics: {', '.join(taken)} is the altseason section's name")
        known = [*columns, *self.altseason_columns()]
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(f"rules.{i}.name: {rule.name!r} is used twice")
            seen.add(rule.name)
            paths = rule.metric_items() if rule.is_composite else [("", rule)]
            for path, item in paths:
                if item.metric not in known:
                    key = f"{path}.metric" if path else "metric"
                    raise ValueError(
                        f"rules.{i}.{key}: unknown metric output {item.metric!r} "
                        f"(known: {', '.join(known)})"
                    )
            names = {column.partition(".")[0] for column in known}
            for field in ("title", "message"):
                try:
                    check("template", getattr(rule, field), names)
                except ValueError as exc:
                    raise ValueError(f"rules.{i}.{field}: {exc}") from None
        if self.digest is not None:
            self.digest.check_references(known)
        return self

    @property
    def expansion(self) -> Expansion:
        """Return how the config's ``for_each`` templates were expanded (empty: none)."""
        return self._expansion or Expansion()

    def with_expansion(self, expansion: Expansion) -> Settings:
        """Return these settings marked as expanded by ``expansion`` (what made them)."""
        self._expansion = expansion
        return self

    def origin(self, section: str, name: str) -> Expanded | None:
        """Return the template and member an expanded feed, series, metric or rule came from."""
        return self.expansion.names.get((section, name))

    def template_of(self, rule: str) -> str | None:
        """Return the name of the rule template (as written) ``rule`` was expanded from."""
        origin = self.origin("rules", rule)
        return origin.template if origin is not None else None

    def members(self, watchlist: str) -> tuple[Member, ...]:
        """Return a watchlist's members the templates were expanded for."""
        return self.expansion.members.get(watchlist, ())

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
        """Return a rule's ``for`` in bars of its timeframe (durations round up)."""
        if isinstance(rule.for_, int):
            return rule.for_
        bar_s = self.rule_timeframe(rule).ms / 1000
        return max(1, math.ceil(parse_duration(rule.for_) / bar_s))

    def rule_timeframe(self, rule: RuleConfig) -> Timeframe:
        """Return a rule's bar: its metric's timeframe, a composite's finest."""
        timeframes = [Timeframe.parse(self.column_timeframe(c)) for c in rule.columns()]
        return min(timeframes, key=lambda tf: tf.ms)

    def feeds_of(self, series: Iterable[str]) -> tuple[str, ...]:
        """Return the feeds under these series (a feed itself, or a ratio's two legs)."""
        legs: list[str] = []
        for name in series:
            ratio = self.series.get(name)
            legs.extend(ratio.ratio if ratio else (name,))
        return tuple(dict.fromkeys(legs))

    def stale_feeds_of(self, rule: RuleConfig) -> tuple[str, ...]:
        """Return the feeds a rule's metrics read (directly or through a ratio)."""
        owners = self.metric_columns()
        metrics = [self.metrics.get(owners.get(column, "")) for column in rule.columns()]
        return self.feeds_of(s for m in metrics if m is not None for s in m.inputs())

    def column_timeframe(self, column: str) -> str:
        """Return the bar length of a metric output (the altseason index is daily)."""
        metric = self.metrics.get(self.metric_columns().get(column, ""))
        return metric.timeframe if metric is not None else "1d"
