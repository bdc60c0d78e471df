"""Where the engine's alerts go in the daemon: silences first, then the durable outbox."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from moodring.delivery.dispatcher import Dispatcher
from moodring.rules.alert import Alert
from moodring.rules.silences import Silences
from moodring.times import iso_time

log = logging.getLogger("moodring.delivery")


class AlertSink:
    """Takes each alert: a silenced one is logged and dropped, any other is enqueued."""

    def __init__(
        self, dispatcher: Dispatcher, silences: Silences, clock: Callable[[], float] = time.time
    ) -> None:
        self._dispatcher = dispatcher
        self._silences = silences
        self._clock = clock
        self.silenced = 0

    def __call__(self, alert: Alert) -> None:
        """Enqueue ``alert`` unless its rule is silenced."""
        silence = self._silences.silenced(alert.rule, self._clock())
        if silence is not None:
            self.silenced += 1
            log.info(
                "silenced %s %s at %s (until %s: %s)", alert.rule, alert.state,
                iso_time(alert.time), iso_time(int(silence.until * 1000)), silence.reason or "-",
            )  # fmt: skip
            return
        if self._dispatcher.enqueue(alert):
            log.info("alert %s %s at %s queued", alert.rule, alert.state, iso_time(alert.time))
