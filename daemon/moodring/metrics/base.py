"""What every indicator offers the engine, and how a metric type registers.

An indicator has named outputs, takes closed bars and peeks at the forming one. A metric
type registers its config model (which says what it reads and looks back over) and what
builds its indicator from a config; settings and the engine read the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

import numpy as np

from moodring.market.bar import Bar
from moodring.market.frame import BarFrame
from moodring.settings import METRICS, MetricConfig, MetricType

C = TypeVar("C", bound=MetricConfig)


class _Outputs:
    """Named outputs; a single-output indicator keeps its one value in ``value``.

    ``value`` is read-only here: an indicator keeps it in a slot (and declares it so) or
    computes it in a property of its own.
    """

    __slots__ = ()
    outputs: ClassVar[tuple[str, ...]] = ("value",)

    @property
    def value(self) -> float:
        """Return the single output after the latest closed bar."""
        raise NotImplementedError

    @property
    def values(self) -> tuple[float, ...]:
        """Return the outputs after the latest closed bar (NaN until the window is full)."""
        return (self.value,)


class Indicator(_Outputs, ABC):
    """A one-input indicator: ``update_bar`` on each closed bar, ``peek_bar`` with the forming one.

    ``batch`` computes the same outputs for a whole history at once, for backtests.
    """

    __slots__ = ()

    @abstractmethod
    def update_bar(self, bar: Bar) -> None:
        """Fold a closed bar into the indicator."""

    @abstractmethod
    def peek_bar(self, bar: Bar) -> tuple[float, ...]:
        """Return the outputs as they would be if ``bar`` closed now, changing nothing."""

    @abstractmethod
    def batch(self, bars: BarFrame) -> np.ndarray:
        """Return an (n, len(outputs)) array of the outputs after each closed bar."""


class PairIndicator(_Outputs, ABC):
    """A two-input indicator fed with pairs of bars joined on open time.

    ``after_gap`` marks a pair that opens later than the markets' calendars allow after the
    pair before it (data is missing in between): no return may be taken across it.
    """

    __slots__ = ()

    @abstractmethod
    def update_bars(self, a: Bar, b: Bar, after_gap: bool = False) -> None:
        """Fold a closed pair of joined bars into the indicator."""

    @abstractmethod
    def peek_bars(self, a: Bar, b: Bar, after_gap: bool = False) -> tuple[float, ...]:
        """Return the outputs as they would be if the forming pair closed now."""

    @abstractmethod
    def batch(self, a: BarFrame, b: BarFrame, after_gap: np.ndarray | None = None) -> np.ndarray:
        """Return an (n, len(outputs)) array after each joined pair (rows of equal time).

        ``after_gap`` (optional, one bool per row) marks the pairs that follow a data gap.
        """


def register_metric(
    name: str, config: type[C], build: Callable[[C], Indicator | PairIndicator]
) -> None:
    """Register the metric type ``name`` (the config's ``type``): its model and indicator."""
    METRICS.register(name, MetricType(config, build))


def indicator_for(config: MetricConfig) -> Indicator | PairIndicator:
    """Return a fresh indicator for a metric's config, built as its type registered."""
    indicator = METRICS[config.type].build(config)
    if not isinstance(indicator, Indicator | PairIndicator):
        raise TypeError(f"metric type {config.type!r} built a {type(indicator).__name__}")
    return indicator
