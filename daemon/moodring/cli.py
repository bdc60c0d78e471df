"""The ``moodring`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from moodring import __version__
from moodring.backtest.csvfile import CsvError, load_csv
from moodring.backtest.runner import FeedHistory, run_batch, run_streaming, runnable_metrics
from moodring.backtest.table import iso_time
from moodring.settings import DEFAULT_CONFIG, ConfigError, load_settings

log = logging.getLogger("moodring")
SAMPLES = DEFAULT_CONFIG.parent / "samples"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``moodring`` command; return the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args))
    except (ConfigError, CsvError, UsageError) as exc:
        print(f"moodring: {exc}", file=sys.stderr)
        return 1


class UsageError(Exception):
    """Arguments that are well-formed but cannot be acted on."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moodring", description="Streaming alerts for cross-market divergence."
    )
    parser.add_argument("--version", action="version", version=f"moodring {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    backtest = commands.add_parser(
        "backtest", help="replay history CSVs through the engine and write metric values"
    )
    backtest.add_argument("-c", "--config", type=Path, help="YAML config (default: built-in)")
    backtest.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="FEED=PATH",
        help="history CSV for a feed (repeat per feed)",
    )
    backtest.add_argument(
        "--sample", action="store_true", help="use the bundled sample history for eth, btc, rut"
    )
    backtest.add_argument("--from", dest="start", type=_date, help="first bar date (UTC)")
    backtest.add_argument("--to", dest="end", type=_date, help="last bar date (UTC, inclusive)")
    backtest.add_argument("--metrics-out", type=Path, help="write metric values to this CSV")
    backtest.add_argument(
        "--streaming",
        action="store_true",
        help="feed bars one by one through the live engine instead of the vectorised path",
    )
    backtest.set_defaults(handler=_backtest)
    return parser


def _date(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or datetime: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _backtest(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    paths = dict(_feed_path(item) for item in args.data)
    if args.sample:
        for feed in ("eth", "btc", "rut"):
            paths.setdefault(feed, SAMPLES / f"{feed}_1d.csv")
    if not paths:
        raise UsageError("no history given: use --data FEED=PATH (or --sample)")
    unknown = sorted(set(paths) - set(settings.feeds))
    if unknown:
        raise UsageError(
            f"--data names unknown feed(s) {unknown}; config has {sorted(settings.feeds)}"
        )
    start_ms = _ms(args.start)
    end_ms = None
    if args.end is not None:
        whole_day = args.end.time() == datetime.min.time()
        end_ms = _ms(args.end + (timedelta(days=1) if whole_day else timedelta(milliseconds=1)))

    history: dict[str, FeedHistory] = {}
    for feed in settings.feeds:
        if feed not in paths:
            continue
        loaded = load_csv(paths[feed])
        for line, reason in loaded.skipped:
            log.warning("%s:%d: row skipped: %s", paths[feed], line, reason)
        history[feed] = FeedHistory.of(loaded.bars).until(end_ms)
        log.info("%s: %d bars from %s", feed, len(history[feed].bars), paths[feed])

    metrics, missing = runnable_metrics(settings, set(history))
    if missing:
        log.warning("no data for the inputs of %s: skipped", ", ".join(missing))
    if not metrics:
        raise UsageError("none of the configured metrics has data for all its feeds")
    run = run_streaming if args.streaming else run_batch
    table = run(settings, history, metrics).between(start_ms, end_ms)
    if args.metrics_out is not None:
        table.write_csv(args.metrics_out)
        log.info("wrote %d rows to %s", len(table.time), args.metrics_out)
    for name, column in table.columns.items():
        filled = np.flatnonzero(~np.isnan(column))
        if filled.size:
            at = int(table.time[filled[-1]])
            log.info("last %s = %.6g at %s", name, column[filled[-1]], iso_time(at))
    return 0


def _feed_path(item: str) -> tuple[str, Path]:
    feed, sep, path = item.partition("=")
    if not sep or not feed or not path:
        raise UsageError(f"--data takes FEED=PATH, got {item!r}")
    return feed, Path(path)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


if __name__ == "__main__":
    sys.exit(main())
