"""Send one alert to one apprise URL; routing, target ids and URL masking."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any

from moodring.delivery.worker import (
    DELIVERY_WORKER,
    AppriseSender,
    DeliveryError,
    DeliveryWorker,
    WorkerError,
)
from moodring.notifyurls import scheme_only, url_facts
from moodring.rules.alert import Alert
from moodring.settings import NotifyConfig, NotifyTarget

__all__ = ["DeliveryError", "Sender", "WorkerSender"]

log = logging.getLogger("moodring.delivery")


def alert_fields(alert: Alert, target: str | None = None) -> dict[str, str]:
    """Return the structured log fields of an alert (and a target id): ``extra=`` of a record."""
    fields = {"rule": alert.rule, "alert_key": alert.key}
    if target is not None:
        fields["target"] = target
    return fields


def target_id(url: str) -> str:
    """Return a stable id of a URL that does not reveal it (16 hex chars of its sha256)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def mask_url(url: str) -> str:
    """Return the URL in apprise's privacy form, without its query; ``scheme://***`` if unknown."""
    try:
        return str(url_facts(url)["masked"])
    except ValueError:
        return scheme_only(url)


def routed_targets(alert: Alert, notify: NotifyConfig) -> list[NotifyTarget]:
    """Return the targets an alert goes to: untagged ones, and tagged ones its route meets."""
    route = set(notify.routes.get(alert.severity, ()))
    return [target for target in notify.urls if not target.tags or route & set(target.tags)]


def notify_type(alert: Alert) -> str:
    """Return apprise's notify type: success when resolved, else by severity."""
    if alert.state == "resolved":
        return "success"
    return {"critical": "failure", "warning": "warning"}.get(alert.severity, "info")


class Sender:
    """Sends alerts with apprise in this process; sends bounded by ``notify.timeout``."""

    def __init__(self, notify: NotifyConfig) -> None:
        self._timeout = notify.timeout or None
        self._formats: dict[str, str] = {}
        for target in notify.urls:
            self._formats.setdefault(target.url.get_secret_value(), target.format)
        self._prepare()

    def _prepare(self) -> None:
        """Load apprise for every URL now (a URL it cannot parse is logged)."""
        self._apprise = AppriseSender()
        for url in self._formats:
            if self._apprise.load(url) is None:
                log.error("notify URL %s cannot be parsed by apprise", mask_url(url))

    def request(self, target_url: str, alert: Alert, attachment: Path | None) -> dict[str, Any]:
        """Return what apprise is asked to send: an alert to one URL."""
        return {
            "url": target_url,
            "title": alert.title,
            "body": alert.message,
            "type": notify_type(alert),
            "format": self._formats.get(target_url, "text"),
            "attach": str(attachment) if attachment is not None else None,
            "timeout": self._timeout,
        }

    async def deliver(
        self, target_url: str, alert: Alert, attachment: Path | None
    ) -> DeliveryError | None:
        """Send an alert; return None on success, else why it failed (never the URL)."""
        return await self._apprise.send(self.request(target_url, alert, attachment))

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


class WorkerSender(Sender):
    """Sends alerts through the delivery worker process: apprise never loads in this one."""

    def __init__(self, notify: NotifyConfig, worker: DeliveryWorker = DELIVERY_WORKER) -> None:
        self._worker = worker
        super().__init__(notify)

    def _prepare(self) -> None:
        """Log the URLs apprise cannot parse; have the worker load the others ahead of alerts."""
        for url in self._formats:
            with contextlib.suppress(ValueError):  # the worker cannot say: the sends will
                if not url_facts(url)["usable"]:
                    log.error("notify URL %s cannot be parsed by apprise", mask_url(url))
                    continue
            with contextlib.suppress(WorkerError):  # the first send tries again
                self._worker.request("load", url)

    async def deliver(
        self, target_url: str, alert: Alert, attachment: Path | None
    ) -> DeliveryError | None:
        """Have the worker send an alert; None on success, else why it failed (never the URL)."""
        return await self._worker.send(self.request(target_url, alert, attachment))
