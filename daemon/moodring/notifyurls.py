"""What apprise makes of a notify URL or an apprise config, asked here or in another process.

apprise and its ~190 plugins cost the daemon 10-15 MB, so ``moodring run`` asks a delivery
worker process instead (``use_remote``); other commands ask apprise here, importing it on
the first question. Answers are plain JSON-able values, the same from either place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# (question, argument) -> answer, in the delivery worker: set by ``moodring run``
Remote = Callable[[str, Any], Any]
_remote: Remote | None = None
_facts: dict[str, dict[str, Any]] = {}


def use_remote(remote: Remote | None) -> None:
    """Send later questions to ``remote`` (None: ask apprise in this process)."""
    global _remote
    _remote = remote


@contextmanager
def apprise_silenced() -> Iterator[None]:
    """Silence apprise's logger: it logs unparseable URLs verbatim, secrets and all."""
    quiet = logging.getLogger("apprise")
    was, quiet.disabled = quiet.disabled, True
    try:
        yield
    finally:
        quiet.disabled = was


def _ask(question: str, arg: Any) -> Any:
    """Return the remote's answer; ValueError (one sentence) if it cannot give one."""
    assert _remote is not None
    try:
        return _remote(question, arg)
    except Exception as exc:
        raise ValueError(f"apprise could not be asked: {exc}") from None


def url_facts(url: str) -> dict[str, Any]:
    """Return ``usable``, ``masked`` (privacy form, no query) and ``private`` of a URL.

    ValueError if the delivery worker cannot be asked.
    """
    known = _facts.get(url)
    if known is None:
        known = _ask("facts", url) if _remote is not None else local_facts(url)
        if len(_facts) >= 256:
            _facts.clear()
        _facts[url] = known
    return known


def config_urls(source: str) -> list[tuple[str, list[str]]] | None:
    """Return the URLs (and tags) of an apprise config file or URL; None if apprise cannot."""
    answer = _ask("config", source) if _remote is not None else local_config_urls(source)
    return None if answer is None else [(url, list(tags)) for url, tags in answer]


def scheme_only(url: str) -> str:
    """Return ``scheme://***`` of a URL (``***`` without a scheme)."""
    match = _SCHEME.match(url)
    return f"{match.group(1).lower()}://***" if match else "***"


def local_facts(url: str) -> dict[str, Any]:
    """Answer ``url_facts`` with apprise in this process."""
    import apprise

    with apprise_silenced():
        try:
            plugin = apprise.Apprise.instantiate(url)
        except Exception:
            plugin = None
        masked, private = scheme_only(url), False
        if plugin is not None:
            try:
                shown = plugin.url(privacy=True)
                masked = shown.partition("?")[0]
                private = shown != plugin.url(privacy=False)
            except Exception:
                pass
    return {"usable": plugin is not None, "masked": masked, "private": private}


def local_config_urls(source: str) -> list[tuple[str, list[str]]] | None:
    """Answer ``config_urls`` with apprise in this process."""
    import apprise

    with apprise_silenced():
        config = apprise.AppriseConfig.instantiate(source, recursion=1)
        services = config.services() if config is not None else []
    if config is None:
        return None
    # apprise 2.3 wraps tags in AppriseTag, whose str() is the bare name
    return [(s.url(privacy=False), sorted({str(t) for t in s.tags})) for s in services]


LOCAL: dict[str, Callable[[Any], Any]] = {"facts": local_facts, "config": local_config_urls}
