"""Rule operators, one table: name, level or edge, operand shape, test, and chart levels.

A leaf module: settings derives the ``Condition`` and item models from the table (one
optional key per operator) and ``moodring.rules`` evaluates rules with its tests. A new
operator is one row here (and a line in the README).

A level holds on a value (``above: 3``); an edge fires on a change between the latest
values (``crosses_above: 3``) and reads that many of them. Edges never fire on an
undefined (NaN) value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

Band = tuple[float, float]
# A level test of one value, or an edge test of the value history (oldest first, latest last).
Level = Callable[[float], bool]
Edge = Callable[[Sequence[float]], bool]


class Operand(BaseModel):
    """An operand with keys: unknown keys are errors, values immutable, never echoed."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class BandEdge(Operand):
    """A band, and the side a value enters it from (``from``) or leaves it to (``to``)."""

    band: Band
    from_: Literal["below", "above"] | None = Field(None, alias="from")
    to: Literal["below", "above"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_band(cls, value: Any) -> Any:
        return {"band": value} if isinstance(value, list | tuple) else value

    @model_validator(mode="after")
    def _ordered(self) -> BandEdge:
        if self.band[0] > self.band[1]:
            raise ValueError("band: [lo, hi] needs lo <= hi")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        return data["band"] if self.side is None else data

    @property
    def side(self) -> str | None:
        """Return the side named (``from`` or ``to``), if any."""
        return self.from_ or self.to


class Moving(Operand):
    """A move of at least ``pct`` percent (or ``by`` units) within ``bars`` bars."""

    bars: int = Field(ge=1)
    pct: float | None = Field(None, gt=0)
    by: float | None = Field(None, gt=0)


@dataclass(frozen=True, slots=True)
class Operator:
    """One rule operator.

    ``test(operand)`` returns a ``Level`` for a level, an ``Edge`` for an edge, which reads
    the latest ``reads(operand)`` values. ``check(operand)`` raises ValueError for an
    operand its shape allows but the operator does not. ``levels(operand)`` are the
    horizontal lines a chart draws.
    """

    name: str
    kind: Literal["level", "edge"]
    operand: Any
    test: Callable[[Any], Callable[[Any], bool]]
    reads: Callable[[Any], int] = lambda operand: 2
    check: Callable[[Any], None] = lambda operand: None
    levels: Callable[[Any], list[float]] = lambda operand: [float(operand)]

    @property
    def is_edge(self) -> bool:
        """Return whether the operator fires on a change rather than holds as a level."""
        return self.kind == "edge"


def _band_levels(band: Band) -> list[float]:
    return [float(band[0]), float(band[1])]


def _ordered_band(name: str) -> Callable[[Band], None]:
    def check(band: Band) -> None:
        if band[0] > band[1]:
            raise ValueError(f"{name}: the band [lo, hi] needs lo <= hi")

    return check


def _inside(band: Band) -> Level:
    lo, hi = band
    return lambda v: lo <= v <= hi


def _outside(band: Band) -> Level:
    lo, hi = band
    return lambda v: v < lo or v > hi


def _defined(test: Edge) -> Edge:
    """Return ``test`` guarded so that an undefined (NaN) value never makes an edge."""
    return lambda h: h[-2] == h[-2] and h[-1] == h[-1] and test(h)


def _crosses_above(x: float) -> Edge:
    return _defined(lambda h: h[-2] <= x < h[-1])


def _crosses_below(x: float) -> Edge:
    return _defined(lambda h: h[-2] >= x > h[-1])


def _band_sides(edge: BandEdge) -> tuple[Level, dict[str | None, Level]]:
    """Return the test of being inside the closed band, and of being off it by side."""
    lo, hi = edge.band
    sides: dict[str | None, Level] = {
        "below": lambda v: v < lo,
        "above": lambda v: v > hi,
        None: lambda v: not lo <= v <= hi,
    }
    return (lambda v: lo <= v <= hi), sides


def _enters(edge: BandEdge) -> Edge:
    inside, side = _band_sides(edge)
    came = side[edge.from_]
    return _defined(lambda h: came(h[-2]) and inside(h[-1]))


def _exits(edge: BandEdge) -> Edge:
    inside, side = _band_sides(edge)
    went = side[edge.to]
    return _defined(lambda h: inside(h[-2]) and went(h[-1]))


def _side_check(name: str) -> Callable[[BandEdge], None]:
    """Return the check that ``enters`` names ``from`` only and ``exits`` ``to`` only."""
    wrong, right, does = (
        ("to", "from", "comes from") if name == "enters" else ("from", "to", "goes to")
    )

    def check(edge: BandEdge) -> None:
        if (edge.to if wrong == "to" else edge.from_) is not None:
            raise ValueError(
                f"{name}.{wrong}: {name} takes {right}: below or above (the side the value {does})"
            )

    return check


def _moving(name: str) -> Callable[[Moving], Edge]:
    """Return the test factory of a move operator: it fires when the move first gets there."""
    up, pct = "_up" in name, name.endswith("_pct")

    def test(move: Moving) -> Edge:
        bars, size = move.bars, (move.pct if pct else move.by) or 0.0

        def moved(h: Sequence[float], back: int) -> bool:
            now, then = h[-1 - back], h[-1 - back - bars]
            if math.isnan(now) or math.isnan(then) or (pct and then == 0.0):
                return False
            change = (now - then) / abs(then) * 100.0 if pct else now - then
            return change >= size if up else change <= -size

        # fires when the move first reaches the size, not on every bar it stays there
        return lambda h: moved(h, 0) and not moved(h, 1)

    return test


def _move_check(name: str) -> Callable[[Moving], None]:
    wanted = "pct" if name.endswith("_pct") else "by"

    def check(move: Moving) -> None:
        if getattr(move, wanted) is None:
            raise ValueError(f"{name} needs {{{wanted}: ..., bars: ...}}")

    return check


def _move(name: str) -> Operator:
    return Operator(
        name,
        "edge",
        Moving,
        _moving(name),
        reads=lambda move: move.bars + 2,
        check=_move_check(name),
        levels=lambda move: [],
    )


OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("above", "level", float, lambda x: lambda v: v > x),
        Operator("below", "level", float, lambda x: lambda v: v < x),
        Operator(
            "inside", "level", Band, _inside, check=_ordered_band("inside"), levels=_band_levels
        ),
        Operator(
            "outside", "level", Band, _outside, check=_ordered_band("outside"), levels=_band_levels
        ),
        Operator("equals", "level", float, lambda x: lambda v: v == x),
        Operator("crosses_above", "edge", float, _crosses_above),
        Operator("crosses_below", "edge", float, _crosses_below),
        Operator(
            "enters",
            "edge",
            BandEdge,
            _enters,
            check=_side_check("enters"),
            levels=lambda edge: _band_levels(edge.band),
        ),
        Operator(
            "exits",
            "edge",
            BandEdge,
            _exits,
            check=_side_check("exits"),
            levels=lambda edge: _band_levels(edge.band),
        ),
        _move("moving_up_pct"),
        _move("moving_down_pct"),
        _move("moving_up"),
        _move("moving_down"),
    )
}
LEVELS = tuple(name for name, op in OPERATORS.items() if not op.is_edge)
EDGES = tuple(name for name, op in OPERATORS.items() if op.is_edge)
