"""Draw docs/telegram-alert.png: a real moodring alert as Telegram shows it.

Run: python docs/telegram_alert.py (needs Debian's chromium: apt-get install chromium).
The built-in config's rules run over the bundled sample history; the chosen alert's title,
message and chart PNG are what the daemon sends, laid out as Telegram lays out a photo
with a caption (apprise sends the chart with the bold title and the message as caption),
screenshotted in headless chromium and reduced to a palette PNG under 300 KB.
"""

from __future__ import annotations

import base64
import html
import io
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from moodring.backtest.csvfile import load_csv
from moodring.backtest.runner import FeedHistory, merged_bars
from moodring.charts.render import render_png
from moodring.cli import SAMPLES
from moodring.configfile import load_settings
from moodring.pipeline import Pipeline
from moodring.rules.alert import Alert

OUT = Path(__file__).resolve().parent / "telegram-alert.png"
RULE = "eth-rut-decoupling"
AFTER_MS = 1_751_328_000_000  # 2025-07-01: the summer decoupling
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 620, 548
MAX_BYTES = 300_000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><style>
  body {{ margin: 0; width: {width}px; height: {height}px; overflow: hidden;
         font: 15px/1.35 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
         background: linear-gradient(160deg, #a7c796 0%, #d2dfa8 55%, #a9c998 100%); }}
  header {{ display: flex; align-items: center; gap: 12px; padding: 10px 16px;
           background: #fff; border-bottom: 1px solid #dfe1e5; }}
  .avatar {{ width: 40px; height: 40px; border-radius: 50%; background: #5aa9e6;
            color: #fff; font-weight: 600; font-size: 19px; display: grid; place-items: center; }}
  .name {{ font-weight: 600; color: #000; }}
  .sub {{ font-size: 13px; color: #8a959f; }}
  .day {{ margin: 14px auto 8px; width: max-content; padding: 3px 10px; border-radius: 12px;
         background: rgba(60, 90, 50, .38); color: #fff; font-size: 13px; font-weight: 500; }}
  .bubble {{ margin: 0 16px; width: 500px; background: #fff; border-radius: 12px 12px 12px 4px;
            box-shadow: 0 1px 2px rgba(16, 35, 47, .15); overflow: hidden; }}
  .bubble img {{ display: block; width: 500px; }}
  .caption {{ padding: 6px 10px 6px 10px; color: #000; white-space: pre-wrap; }}
  .time {{ float: right; margin: 8px 0 -4px 12px; font-size: 12px; color: #a0acb6; }}
</style></head><body>
  <header><div class="avatar">m</div>
    <div><div class="name">moodring alerts</div><div class="sub">bot</div></div></header>
  <div class="day">{day}</div>
  <div class="bubble"><img src="data:image/png;base64,{chart}">
    <div class="caption"><b>{title}</b>
{message}<span class="time">{clock}</span></div></div>
</body></html>
"""


def sample_alert() -> Alert:
    """Return the first firing decoupling alert of the summer of 2025 on the sample history."""
    settings = load_settings()
    history = {f: FeedHistory.of(load_csv(SAMPLES / f"{f}_1d.csv").bars) for f in ("eth", "rut")}
    engine = Pipeline(settings)
    alerts: list[Alert] = []
    engine.rules.subscribe(alerts.append)
    for feed, t, bar in merged_bars(history):
        with engine.deferred():
            engine.on_candle(feed, t, bar, closed=True, length_ms=history[feed].step_ms)
    return next(
        a
        for a in alerts
        if a.rule == RULE and a.state == "firing" and a.time >= AFTER_MS and a.chart
    )


def page(alert: Alert, chart: bytes) -> str:
    """Return the HTML of a Telegram chat showing ``alert`` with its chart."""
    assert alert.chart is not None
    sent = datetime.fromtimestamp(alert.time / 1000, UTC) + timedelta(days=1, seconds=3)
    return PAGE.format(
        width=WIDTH,
        height=HEIGHT,
        day=sent.strftime("%-d %B"),
        chart=base64.b64encode(chart).decode(),
        title=html.escape(alert.title),
        message=html.escape(alert.message),
        clock=sent.strftime("%H:%M"),
    )


def screenshot(text: str) -> bytes:
    """Return chromium's screenshot of an HTML page."""
    with tempfile.TemporaryDirectory() as tmp:
        source, shot = Path(tmp) / "chat.html", Path(tmp) / "chat.png"
        source.write_text(text, encoding="utf-8")
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={WIDTH},{HEIGHT}",
                f"--screenshot={shot}",
                source.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return shot.read_bytes()


def small_png(png: bytes) -> bytes:
    """Return ``png`` as a 256-colour palette PNG (screenshots of flat UI lose nothing seen)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


def main() -> int:
    """Write docs/telegram-alert.png and say how big it is."""
    alert = sample_alert()
    assert alert.chart is not None
    png = small_png(screenshot(page(alert, render_png(alert.chart))))
    if len(png) >= MAX_BYTES:
        print(f"{OUT.name} would be {len(png)} bytes, over {MAX_BYTES}", file=sys.stderr)
        return 1
    OUT.write_bytes(png)
    print(f"{OUT}: {len(png)} bytes, {alert.title!r} at {alert.time}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
