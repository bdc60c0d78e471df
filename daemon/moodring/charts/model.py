"""Chart data as typed models: an alert's chart and the digest's, parsed from JSON-able data.

Charts travel as plain data (an alert's ``chart`` goes through the outbox as JSON); they
are parsed here, at the renderer's door, into models. A bad chart is a ``ChartError``
whose message starts with the path of the first bad key (``panels[1].series.x[5]: ...``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from moodring.errors import MoodringError
from moodring.settings import MAX_CHART_PANELS

MAX_PANELS = MAX_CHART_PANELS


class ChartError(MoodringError, ValueError):
    """Invalid chart data; the message starts with the path of the offending key."""


def _real(value: object) -> float | None:
    """Return ``value`` as a float if it is a real number (bools excluded), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        return float(value)
    return None


def _listed(value: object) -> object:
    """Take a 1-D numpy array as the list of its values."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"expected a 1-D array, got {value.ndim}-D")
        return value.tolist()
    return value


def _epoch_ms(value: object) -> int:
    number = _real(value)
    if number is None or not math.isfinite(number) or not number.is_integer():
        raise ValueError(f"expected integer epoch milliseconds, got {value!r}")
    return int(number)


def _value(value: object) -> float:
    """Return a point's value; null, NaN and infinities are a gap (NaN)."""
    if value is None:
        return math.nan
    number = _real(value)
    if number is None:
        raise ValueError(f"expected a number or null, got {value!r}")
    return number if math.isfinite(number) else math.nan


def _finite(value: object) -> float:
    number = _real(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _marker(value: object) -> int | None:
    if value is None:
        return None
    number = _real(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"expected epoch milliseconds or null, got {value!r}")
    return int(number)


EpochMs = Annotated[int, BeforeValidator(_epoch_ms)]
Value = Annotated[float, BeforeValidator(_value)]
Finite = Annotated[float, BeforeValidator(_finite)]
Times = Annotated[list[EpochMs], BeforeValidator(_listed)]
Values = Annotated[list[Value], BeforeValidator(_listed)]
Range = tuple[Finite, Finite]


class _Chart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Panel(_Chart):
    """One panel of an alert chart: named series on the chart's times, levels to draw."""

    label: StrictStr = ""
    series: dict[str, Values]
    normalise: StrictBool = False  # rescaled to 100 at each series' first value
    thresholds: list[Finite] = []

    @field_validator("series")
    @classmethod
    def _named_series(cls, series: dict[str, list[float]]) -> dict[str, list[float]]:
        if not series:
            raise ValueError("expected at least one series")
        if not all(series):
            raise ValueError("series names must be non-empty strings")
        return series


class AlertChart(_Chart):
    """An alert's chart: panels stacked on shared bar open times, a marker at the alert."""

    title: StrictStr = ""
    time: Times
    panels: list[Panel]
    marker: Annotated[int | None, BeforeValidator(_marker)] = None

    panel: ClassVar[type[_Chart]] = Panel

    @field_validator("time")
    @classmethod
    def _two_or_more(cls, time: list[int]) -> list[int]:
        if len(time) < 2:
            raise ValueError(f"expected at least 2 values, got {len(time)}")
        return time

    @field_validator("panels")
    @classmethod
    def _panel_count(cls, panels: list[Panel]) -> list[Panel]:
        if not 1 <= len(panels) <= MAX_PANELS:
            raise ValueError(f"expected 1 to {MAX_PANELS} panels, got {len(panels)}")
        return panels

    @model_validator(mode="after")
    def _on_the_times(self) -> AlertChart:
        # a root error names its full path itself
        for i in range(1, len(self.time)):
            if self.time[i] <= self.time[i - 1]:
                raise ValueError(
                    f"time[{i}]: not ascending ({self.time[i]} after {self.time[i - 1]})"
                )
        n = len(self.time)
        for i, panel in enumerate(self.panels):
            for name, values in panel.series.items():
                if len(values) != n:
                    raise ValueError(
                        f"panels[{i}].series.{name}: expected {n} values, got {len(values)}"
                    )
                if panel.normalise:
                    first = next((j for j, v in enumerate(values) if v == v), None)
                    if first is not None and values[first] == 0:
                        raise ValueError(
                            f"panels[{i}].series.{name}: cannot normalise, first value "
                            f"(index {first}) is 0"
                        )
        return self

    def arrays(self, panel: Panel) -> dict[str, np.ndarray]:
        """Return a panel's series as float arrays (NaN for gaps), normalised if asked."""
        out = {}
        for name, values in panel.series.items():
            array = np.asarray(values, dtype=np.float64)
            present = np.flatnonzero(~np.isnan(array))
            if panel.normalise and present.size:
                array = array / array[present[0]] * 100.0
            out[name] = array
        return out


class DigestPanel(_Chart):
    """One panel of the digest's chart: series on their own times, lines, a band, limits."""

    label: StrictStr = ""
    time: Times
    series: dict[str, Values]
    lines: list[Finite] | None = None
    band: Range | None = None  # shaded
    limits: Range | None = None  # of the y axis


class DigestChart(_Chart):
    """The digest's chart: up to four panels in a 2x2 grid over [start, end]."""

    kind: Literal["digest"]
    title: StrictStr = ""
    start: EpochMs
    end: EpochMs
    panels: list[DigestPanel]

    panel: ClassVar[type[_Chart]] = DigestPanel

    @field_validator("panels")
    @classmethod
    def _panel_count(cls, panels: list[DigestPanel]) -> list[DigestPanel]:
        if not 1 <= len(panels) <= MAX_PANELS:
            raise ValueError(f"expected 1 to {MAX_PANELS} panels, got {len(panels)}")
        return panels

    @model_validator(mode="after")
    def _consistent(self) -> DigestChart:
        if self.start >= self.end:
            raise ValueError("start, end: expected start before end")
        for i, panel in enumerate(self.panels):
            for name, values in panel.series.items():
                if len(values) != len(panel.time):
                    raise ValueError(
                        f"panels[{i}].series.{name}: expected {len(panel.time)} values, "
                        f"got {len(values)}"
                    )
        return self


Chart = AlertChart | DigestChart


def parse_chart(data: object) -> Chart:
    """Return chart data as its model (``kind: digest`` or an alert's); ChartError if bad."""
    if not isinstance(data, Mapping):
        raise ChartError(f"chart: expected an object, got {type(data).__name__}")
    model: type[AlertChart] | type[DigestChart] = (
        DigestChart if data.get("kind") == "digest" else AlertChart
    )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ChartError(_first_problem(model, exc)) from None


def _first_problem(model: type[AlertChart] | type[DigestChart], exc: ValidationError) -> str:
    """Return the first error as ``path: message`` in the chart's own words."""
    error = exc.errors()[0]
    loc, kind, given = error["loc"], error["type"], error.get("input")
    got = type(given).__name__
    messages = {
        "missing": "missing",
        "string_type": f"expected a string, got {got}",
        "bool_type": f"expected true or false, got {given!r}",
        "list_type": f"expected a list, got {got}",
        "tuple_type": f"expected a list, got {got}",
        "dict_type": f"expected an object, got {got}",
        "model_type": f"expected an object, got {got}",
        "model_attributes_type": f"expected an object, got {got}",
    }
    if kind == "extra_forbidden":
        owner = model if len(loc) == 1 else model.panel
        message = f"unknown key (expected one of {', '.join(sorted(owner.model_fields))})"
    else:
        message = messages.get(kind, str(error["msg"]).removeprefix("Value error, "))
    path = _path(loc)
    return f"{path}: {message}" if path else message


def _path(loc: tuple[int | str, ...]) -> str:
    """Return a key path as charts name it: ``panels[1].series.x[5]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out
