"""Subprocess driver for test_delivery: enqueue 10 alerts and deliver, or only drain.

Environment: DRIVER_OUTBOX (outbox path), DRIVER_PORT (receiver port), DRIVER_MODE
("enqueue": add the alerts and run the dispatcher until killed; "drain": re-add the same
alerts, which dedup must drop, then drain and exit 0 when the outbox is empty).
Prints "added N" once the alerts are in the outbox.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from moodring.delivery.dispatcher import Dispatcher
from moodring.delivery.outbox import Outbox
from moodring.delivery.sender import target_id
from moodring.rules.alert import Alert
from moodring.settings import NotifyConfig


def alerts() -> list[Alert]:
    return [
        Alert("driver", "firing", 1_000 * i, "m", float(i), "warning", f"t{i}", f"alert {i}")
        for i in range(10)
    ]


async def main() -> int:
    url = f"json://127.0.0.1:{os.environ['DRIVER_PORT']}/hook"
    notify = NotifyConfig(
        urls=(url,), rate_per_minute=6000, retry_initial=0.05, retry_max=0.2, timeout=5
    )
    with Outbox(Path(os.environ["DRIVER_OUTBOX"])) as outbox:
        added = sum(outbox.add(alert, [target_id(url)]) for alert in alerts())
        print(f"added {added}", flush=True)
        dispatcher = Dispatcher(outbox, notify)
        if os.environ["DRIVER_MODE"] == "drain":
            return 0 if await dispatcher.drain(20.0) else 1
        dispatcher.kick()
        async with dispatcher:
            await asyncio.Event().wait()  # delivers until killed
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
