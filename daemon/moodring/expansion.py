"""Watchlist expansion: feeds, series, metrics and rules declared once ``for_each`` member.

An entry of ``feeds``, ``series`` or ``metrics`` (mappings) or of ``rules`` (a list) with a
``for_each: <watchlist>`` key is a template. In its place come one entry per member of the
watchlist, in the watchlist's order, with the member's placeholders filled in the name and
in every string the entry holds:

- ``{base}`` / ``{BASE}``: the base currency, lower / upper case (``sol`` / ``SOL``);
- ``{quote}`` / ``{QUOTE}``: the quote currency (``usdt`` / ``USDT``);
- ``{symbol}``: the market symbol (``SOL/USDT``);
- ``{exchange}``, ``{watchlist}``: the watchlist's exchange and name.

A name must hold ``{base}``, ``{BASE}`` or ``{symbol}`` (else every member would get the
same name). ``{{ ... }}`` is Jinja's: ``{{base}}`` is left alone, while in
``{{ {base}_rut_corr }}`` the placeholder is filled. YAML reads an unquoted ``{base}`` as
a one-key mapping; as a value (``a: {base}``, ``ratio: [{base}, btc]``) it is taken as the
placeholder, a name starting with one must be quoted (``"{base}_rut_corr": ...``).

The expanded names are the names everywhere: settings hold only expanded entries, and
``Settings.expansion`` records the templates, the members and which template and member
each expanded name came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from moodring.settings import FOR_EACH, Expanded, Expansion, Member, WatchlistConfig

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

SECTIONS = ("feeds", "series", "metrics", "rules")
PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
PLACEHOLDERS = ("base", "BASE", "quote", "QUOTE", "symbol", "exchange", "watchlist")
# the placeholders that differ between members: a template's name must hold one
NAMING = ("base", "BASE", "symbol")
# the member a dynamic watchlist's templates are checked with before it is ranked
STAND_IN = "MEMBER"


@dataclass
class Result:
    """Expanded config values, how they were made, and what is wrong with the templates."""

    values: dict[str, Any]
    expansion: Expansion
    # an expanded entry's key path -> its template's key path, and the member it was made for
    locs: dict[Loc, tuple[Loc, Expanded]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # watchlists whose templates expanded for a stand-in member (dynamic, not ranked yet)
    stand_ins: set[str] = field(default_factory=set)

    @property
    def unranked(self) -> list[str]:
        """Return the dynamic watchlists with templates but no members yet."""
        used = {w for section in SECTIONS for w in self.expansion.templates(section).values()}
        return sorted(
            name
            for name in used
            if name in self.expansion.members and not self.expansion.members[name]
        )


def placeholders(member: Member, watchlist: str, exchange: str) -> dict[str, str]:
    """Return the values of the placeholders for one member of a watchlist."""
    return {
        "base": member.base.lower(),
        "BASE": member.base.upper(),
        "quote": member.quote.lower(),
        "QUOTE": member.quote.upper(),
        "symbol": member.symbol,
        "exchange": exchange,
        "watchlist": watchlist,
    }


def fill(value: Any, values: Mapping[str, str]) -> Any:
    """Return ``value`` with every placeholder in its strings (and mapping keys) filled."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), value)
    if _yaml_placeholder(value):
        return values[next(iter(value))]
    if isinstance(value, dict):
        return {fill(k, values): fill(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fill(item, values) for item in value]
    return value


def expand(
    values: Mapping[str, Any],
    members: Mapping[str, Sequence[Member]] | None = None,
    *,
    stand_in: bool = False,
) -> Result:
    """Expand every ``for_each`` template of ``values`` for its watchlist's members.

    An explicit watchlist's members are its own; a dynamic one's come from ``members``
    (absent: not ranked yet, its templates expand to nothing, or with ``stand_in`` to one
    stand-in member so they can be checked). A watchlist that is itself invalid expands to
    nothing (validating the settings names its errors).
    """
    members = members or {}
    lists = _watchlists(values.get("watchlists"))
    resolved: dict[str, tuple[Member, ...]] = {}
    result = Result(dict(values), Expansion(written=dict(values), members=resolved))
    for name, config in lists.items():
        if config is None:
            continue
        if not config.dynamic:
            resolved[name] = tuple(Member.of(symbol) for symbol in config.members)
        elif members.get(name):
            resolved[name] = tuple(members[name])
        else:
            resolved[name] = ()
            if stand_in:
                result.stand_ins.add(name)
    for section in SECTIONS:
        entries = values.get(section)
        if section == "rules" and isinstance(entries, list):
            result.values[section] = _expand_rules(entries, lists, result)
        elif section != "rules" and isinstance(entries, dict):
            result.values[section] = _expand_mapping(section, entries, lists, result)
    return result


def _watchlists(raw: Any) -> dict[str, WatchlistConfig | None]:
    """Return each watchlist's validated config (None when it is invalid)."""
    if not isinstance(raw, dict):
        return {}
    found: dict[str, WatchlistConfig | None] = {}
    for name, entry in raw.items():
        try:
            found[str(name)] = WatchlistConfig.model_validate(entry)
        except ValidationError:
            found[str(name)] = None
    return found


def _members(
    watchlist: str, lists: Mapping[str, WatchlistConfig | None], result: Result
) -> Iterator[tuple[Member, dict[str, str]]]:
    """Yield the members a template over ``watchlist`` is expanded for, with placeholders."""
    config = lists.get(watchlist)
    if config is None:
        return
    chosen = result.expansion.members.get(watchlist, ())
    if watchlist in result.stand_ins:
        chosen = (Member(f"{STAND_IN}/{config.quote}", STAND_IN, config.quote),)
    for member in chosen:
        yield member, placeholders(member, watchlist, config.exchange)


def _template_problems(
    loc: Loc, name: Any, entry: dict[str, Any], lists: Mapping[str, WatchlistConfig | None]
) -> list[Problem]:
    """Return what is wrong with a template itself (its watchlist, name, placeholders)."""
    watchlist = entry[FOR_EACH]
    problems: list[Problem] = []
    if not isinstance(watchlist, str) or watchlist not in lists:
        known = ", ".join(lists) if lists else "none: declare it under watchlists"
        problems.append(((*loc, FOR_EACH), f"unknown watchlist {watchlist!r} (known: {known})"))
    key = (*loc, "name") if loc[0] == "rules" else loc
    found = [p[1] for p in PLACEHOLDER.finditer(name)] if isinstance(name, str) else None
    # a name with an unknown placeholder is told so, below
    if found is not None and set(found) <= set(PLACEHOLDERS) and set(found).isdisjoint(NAMING):
        problems.append(
            (
                key,
                f"the name {name!r} of a for_each template needs {{base}}, {{BASE}} or "
                "{symbol}: else every member gets the same name",
            )
        )
    named = [(key, name)] if loc[0] != "rules" else []
    for where, text in [*named, *_strings(entry, loc)]:
        for match in PLACEHOLDER.finditer(text) if isinstance(text, str) else ():
            if match[1] not in PLACEHOLDERS:
                listed = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                problems.append((where, f"unknown placeholder {match[0]} (placeholders: {listed})"))
    return problems


def _expand_mapping(
    section: str,
    entries: dict[Any, Any],
    lists: Mapping[str, WatchlistConfig | None],
    result: Result,
) -> dict[Any, Any]:
    """Return a section's entries with each template replaced by its members' entries."""
    plain = {key for key, entry in entries.items() if not _is_template(entry)}
    out: dict[Any, Any] = {}
    made: dict[Any, str] = {}  # expanded name -> the template key that made it
    for key, entry in entries.items():
        if not _is_template(entry):
            out[key] = entry
            continue
        loc: Loc = (section, str(key))
        problems = _template_problems(loc, key, entry, lists)
        result.problems += problems
        if problems:
            continue
        body = {k: v for k, v in entry.items() if k != FOR_EACH}
        for member, values in _members(entry[FOR_EACH], lists, result):
            name = fill(str(key), values)
            if name in plain or name in made:
                other = f"the template {made[name]!r}" if name in made else "an entry of its own"
                result.problems.append(
                    (loc, f"member {member.symbol} makes {name!r}, a name {other} has")
                )
                continue
            made[name] = str(key)
            out[name] = fill(body, values)
            origin = Expanded(section, str(key), entry[FOR_EACH], member)
            result.expansion.names[(section, name)] = origin
            result.locs[(section, name)] = (loc, origin)
    return out


def _expand_rules(
    rules: list[Any], lists: Mapping[str, WatchlistConfig | None], result: Result
) -> list[Any]:
    """Return the rules with each template replaced, in its place, by its members' rules."""
    out: list[Any] = []
    for i, rule in enumerate(rules):
        if not _is_template(rule):
            out.append(rule)
            continue
        loc: Loc = ("rules", i)
        name = rule.get("name")
        problems = _template_problems(loc, name, rule, lists)
        result.problems += problems
        if problems:
            continue
        body = {k: v for k, v in rule.items() if k != FOR_EACH}
        for member, values in _members(rule[FOR_EACH], lists, result):
            expanded = fill(body, values)
            origin = Expanded("rules", str(name), rule[FOR_EACH], member)
            result.locs[("rules", len(out))] = (loc, origin)
            if isinstance(expanded.get("name"), str):
                result.expansion.names[("rules", expanded["name"])] = origin
            out.append(expanded)
    return out


def _is_template(entry: Any) -> bool:
    return isinstance(entry, dict) and FOR_EACH in entry


def _yaml_placeholder(value: Any) -> bool:
    """Return whether ``value`` is an unquoted ``{base}`` as YAML reads it: {"base": None}."""
    return (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)) in PLACEHOLDERS
        and next(iter(value.values())) is None
    )


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Yield every string a template holds (its for_each aside) with its key path."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict) and not _yaml_placeholder(value):
        for key, item in value.items():
            if key != FOR_EACH:
                yield from _strings(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, (*loc, i))
