"""Alert text templates: Jinja2 in a sandbox, checked when the config loads."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, meta
from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import SandboxedEnvironment

from moodring.errors import MoodringError
from moodring.settings import CHECKS

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

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateError(MoodringError, ValueError):
    """A template that does not compile or names something that does not exist."""


def check_template(text: str, names: Iterable[str] | None = None) -> None:
    """Compile ``text``; with ``names``, reject variables neither in them nor placeholders."""
    try:
        ast = _ENV.parse(text)
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


def metric_namespace(values: Mapping[str, float]) -> dict[str, Any]:
    """Return template variables for metric outputs: ``eth_mfi`` and ``div.residual_z`` alike."""
    names: dict[str, Any] = {}
    for column, value in values.items():
        head, dot, tail = column.partition(".")
        if dot:
            names.setdefault(head, {})[tail] = value
        else:
            names[column] = value
    return names


@lru_cache(maxsize=256)
def _compiled(text: str) -> Any:
    return _ENV.from_string(text)


CHECKS.register("template", check_template)
