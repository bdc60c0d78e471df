"""Send one alert to one apprise URL; routing, target ids and URL masking."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # apprise costs ~4 MB: loaded only once a URL is used
    import apprise

from moodring.rules.alert import Alert
from moodring.settings import NotifyConfig, NotifyTarget

log = logging.getLogger("moodring.delivery")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
# apprise's plugins log a refused request's HTTP status as "... error=400."
_HTTP_STATUS = re.compile(r"\berror=(\d{3})\b")
# 4xx answers that may succeed later: request timeout, too many requests
RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class DeliveryError:
    """Why a send failed (never the URL); ``permanent`` when retrying cannot help."""

    reason: str
    permanent: bool = False

    def __str__(self) -> str:
        return self.reason


class _QuietFilter(logging.Filter):
    """Drop apprise's log records emitted by this thread while ``quiet`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        """Return whether the record may pass."""
        return not getattr(self.local, "quiet", False)


_QUIET = _QuietFilter()
logging.getLogger("apprise").addFilter(_QUIET)


@contextmanager
def _apprise_quiet() -> Iterator[None]:
    """Silence apprise in this thread: it logs unparseable URLs verbatim."""
    _QUIET.local.quiet = True
    try:
        yield
    finally:
        _QUIET.local.quiet = False


def alert_fields(alert: Alert, target: str | None = None) -> dict[str, str]:
    """Return the structured log fields of an alert (and a target id): ``extra=`` of a record."""
    fields = {"rule": alert.rule, "alert_key": alert.key}
    if target is not None:
        fields["target"] = target
    return fields


def target_id(url: str) -> str:
    """Return a stable id of a URL that does not reveal it (16 hex chars of its sha256)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=128)
def mask_url(url: str) -> str:
    """Return the URL in apprise's privacy form, without its query; ``scheme://***`` if unknown."""
    with _apprise_quiet():
        try:
            import apprise

            plugin = apprise.Apprise.instantiate(url)
        except Exception:
            plugin = None
        if plugin is not None:
            try:
                return plugin.url(privacy=True).partition("?")[0]
            except Exception:
                pass
    match = _SCHEME.match(url)
    return f"{match.group(1).lower()}://***" if match else "***"


def routed_targets(alert: Alert, notify: NotifyConfig) -> list[NotifyTarget]:
    """Return the targets an alert goes to: untagged ones, and tagged ones its route meets."""
    route = set(notify.routes.get(alert.severity, ()))
    return [target for target in notify.urls if not target.tags or route & set(target.tags)]


def notify_type(alert: Alert) -> apprise.NotifyType:
    """Return apprise's notify type: success when resolved, else by severity."""
    import apprise

    if alert.state == "resolved":
        return apprise.NotifyType.SUCCESS
    return {
        "critical": apprise.NotifyType.FAILURE,
        "warning": apprise.NotifyType.WARNING,
    }.get(alert.severity, apprise.NotifyType.INFO)


class Sender:
    """One apprise.Apprise per target URL, created once; sends bounded by ``notify.timeout``."""

    def __init__(self, notify: NotifyConfig) -> None:
        self._timeout = notify.timeout or None
        self._apprise: dict[str, apprise.Apprise | None] = {}
        self._formats: dict[str, str] = {}
        for target in notify.urls:
            url = target.url.get_secret_value()
            self._formats.setdefault(url, target.format)
            self._load(url)

    def _load(self, url: str) -> apprise.Apprise | None:
        """Return the Apprise object of a URL (None if apprise cannot parse it)."""
        if url in self._apprise:
            return self._apprise[url]
        import apprise

        ap = apprise.Apprise()
        with _apprise_quiet():
            ok = ap.add(url)
        if not ok:
            log.error("notify URL %s cannot be parsed by apprise", mask_url(url))
        loaded = ap if ok else None
        self._apprise[url] = loaded
        return loaded

    async def deliver(
        self, target_url: str, alert: Alert, attachment: Path | None
    ) -> DeliveryError | None:
        """Send an alert; return None on success, else why it failed (never the URL)."""
        ap = self._load(target_url)
        if ap is None:
            return DeliveryError("apprise cannot parse the URL", permanent=True)
        try:
            async with asyncio.timeout(self._timeout):
                result = await ap.async_notify(
                    body=alert.message,
                    title=alert.title,
                    notify_type=notify_type(alert),
                    body_format=self._formats.get(target_url, "text"),
                    attach=str(attachment) if attachment is not None else None,
                )
        except TimeoutError:
            return DeliveryError(f"timed out after {self._timeout:g} s")
        except Exception as exc:
            return DeliveryError(f"apprise raised {type(exc).__name__}")
        if result:
            return None
        return _failure(result, target_url)

    async def send(self, target_url: str, alert: Alert, attachment: Path | None) -> bool:
        """Send an alert; return whether it was accepted (never raises, logs failures)."""
        error: DeliveryError | str | None
        try:
            error = await self.deliver(target_url, alert, attachment)
        except Exception as exc:
            error = f"{type(exc).__name__}"
        if error is not None:
            log.warning(
                "send %s to %s failed: %s",
                alert.key,
                mask_url(target_url),
                error,
                extra=alert_fields(alert, target_id(target_url)),
            )
        return error is None


def _failure(result: object, url: str) -> DeliveryError:
    """Return a failure's status and apprise's last warning (URLs scrubbed); 4xx is permanent."""
    status = getattr(result, "status", None)
    reason = f"apprise {getattr(status, 'name', 'failure')}"
    messages = [
        entry.message
        for entry in getattr(result, "logs", list)()
        if entry.level in ("WARNING", "ERROR", "CRITICAL")
    ]
    codes = [int(code) for text in messages for code in _HTTP_STATUS.findall(text)]
    permanent = bool(codes) and 400 <= codes[-1] < 500 and codes[-1] not in RETRYABLE_4XX
    if messages:
        text = messages[-1].replace(url, "<url>")
        reason += ": " + _URL_LIKE.sub("<url>", text)[:300]
    return DeliveryError(reason, permanent)
