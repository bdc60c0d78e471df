"""Alert text templates: Jinja2 in a sandbox, checked when the config loads."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from moodring.errors import MoodringError
from moodring.settings import CHECKS

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

log = logging.getLogger(__name__)

# Placeholders every rule template may use, besides the metrics by name.
PLACEHOLDERS = frozenset(
    {
        "rule",
        "metric",
        "value",
        "previous",
        "threshold",
        "severity",
        "state",
        "time",
        "feeds",
        "metrics",
        "note",
        "items",
    }
)

_ALL = "*"  # in a set of names: every name (a template that does not compile)
# compiled texts kept: the config's, which a watchlist expands per member (a text each)
_CACHED = 8192


class TemplateError(MoodringError, ValueError):
    """A template that does not compile or names something that does not exist."""


# jinja2 is imported on first use: a config without templates never pays its ≈ 1.7 MB
@cache
def _env() -> SandboxedEnvironment:
    """Return the one jinja2 environment."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def check_template(text: str, names: Iterable[str] | None = None) -> None:
    """Compile ``text``; with ``names``, reject variables neither in them nor placeholders."""
    from jinja2 import TemplateError as JinjaError
    from jinja2 import meta

    try:
        ast = _env().parse(text)
        _compiled(text)
    except JinjaError as exc:
        raise TemplateError(f"invalid template {text!r}: {exc}") from None
    if names is not None:
        unknown = meta.find_undeclared_variables(ast) - PLACEHOLDERS - set(names)
        if unknown:
            raise TemplateError(
                f"unknown name(s) {', '.join(sorted(unknown))} in template {text!r}"
            )


def prepare(texts: Iterable[str]) -> None:
    """Compile templates ahead of time, so the first alert does not pay for it."""
    for text in texts:
        _compiled(text)


def render_strict(text: str, context: Mapping[str, Any]) -> str:
    """Render a template, raising whatever rendering raises."""
    return str(_compiled(text).render(context))


def render(text: str, context: Mapping[str, Any]) -> str:
    """Render a checked template; a failure at run time gives the raw text and a warning."""
    try:
        return render_strict(text, context)
    except Exception as exc:  # a template must never stop an alert
        log.warning("template %r failed: %s", text, exc)
        return f"{text} [template error: {exc}]"


def names_in(text: str) -> frozenset[str]:
    """Return the variables a template reads (every name, if it does not compile)."""
    from jinja2 import TemplateError as JinjaError

    try:
        return _names_in(text)
    except JinjaError:
        return frozenset(PLACEHOLDERS) | {_ALL}


@lru_cache(maxsize=_CACHED)
def _names_in(text: str) -> frozenset[str]:
    from jinja2 import meta

    return frozenset(meta.find_undeclared_variables(_env().parse(text)))


def metric_namespace(
    values: Mapping[str, float], wanted: Iterable[str] | None = None
) -> dict[str, Any]:
    """Return template variables for metric outputs: ``eth_mfi`` and ``div.residual_z`` alike.

    With ``wanted``, only the variables of those names (a template's ``names_in``).
    """
    if wanted is not None and _ALL not in wanted:
        chosen: dict[str, float] = {}
        for name in wanted:
            if name in values:
                chosen[name] = values[name]
            elif name not in PLACEHOLDERS:  # a multi-output metric's outputs, by prefix
                prefix = name + "."
                chosen.update((c, v) for c, v in values.items() if c.startswith(prefix))
        values = chosen
    names: dict[str, Any] = {}
    for column, value in values.items():
        head, dot, tail = column.partition(".")
        if dot:
            names.setdefault(head, {})[tail] = value
        else:
            names[column] = value
    return names


@lru_cache(maxsize=_CACHED)
def _compiled(text: str) -> Any:
    return _env().from_string(text)


CHECKS.register("template", check_template)
