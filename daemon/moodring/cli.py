"""The ``moodring`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moodring import __version__
from moodring.errors import DataError, MoodringError, UsageError

if TYPE_CHECKING:  # the commands import these themselves: --help and --version stay fast
    import numpy as np

    from moodring.backtest.runner import CleanHistory, FeedHistory
    from moodring.backtest.watchlist import MembershipLog
    from moodring.configfile import LoadedConfig
    from moodring.delivery.outbox import Delivery
    from moodring.market.jumps import Jump
    from moodring.metrics.altseason import AltseasonSeries
    from moodring.report.tuning import Tuning
    from moodring.rules.alert import Alert
    from moodring.settings import Member, Settings

log = logging.getLogger("moodring")
DEFAULTS = Path(__file__).with_name("defaults")
SAMPLES = DEFAULTS / "samples"
CONFIG_HELP = (
    "YAML config (default: $MOODRING_CONFIG, ./moodring.yaml, "
    "$XDG_CONFIG_HOME/moodring/moodring.yaml, /etc/moodring/moodring.yaml, else built-in)"
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
LOG_LEVEL_VARIABLE = "MOODRING_LOG_LEVEL"
LOG_FORMAT_VARIABLE = "MOODRING_LOG_FORMAT"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``moodring`` command; return the process exit code.

    Exit codes: 0 done, 1 the data cannot give what was asked, 2 an argument cannot be used,
    73 an unusable state directory or output file, 78 an invalid config.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    level, style = _log_options(parser, args)
    from moodring.logs import redact, setup_logging

    setup_logging(level, fmt=style)
    try:
        return int(args.handler(args))
    except MoodringError as exc:
        print(f"moodring: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code


def _log_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, str]:
    """Return the log level and format: the option, else the environment, else INFO, text."""
    chosen = []
    for name, variable, choices, default in (
        ("log_level", LOG_LEVEL_VARIABLE, LOG_LEVELS, "INFO"),
        ("log_format", LOG_FORMAT_VARIABLE, LOG_FORMATS, "text"),
    ):
        value = getattr(args, name, None)
        if value is None:
            given = os.environ.get(variable, "").strip()
            value = given.upper() if name == "log_level" else given.lower()
            if given and value not in choices:
                parser.error(f"${variable}={given!r}: expected one of {', '.join(choices)}")
        chosen.append(value or default)
    return chosen[0], chosen[1]


def input_file(given: str, path: Path) -> Path:
    """Return ``path``, a file the command reads; UsageError naming the argument (``given``)."""
    if path.is_dir():
        raise UsageError(f"{given}: is a folder, not a file")
    if not path.exists():
        raise UsageError(f"{given}: no such file")
    return path


def output_file(flag: str, path: Path) -> Path:
    """Return ``path``, a file the command will write; UsageError naming ``flag`` if it cannot.

    Checked before any work is done: the folder must exist and ``path`` must not be one.
    """
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name in it")
    if not folder.exists():
        raise UsageError(f"{flag} {path}: no folder {folder} (create it first)")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: folder {folder} is not writable")
    return path


def _log_flags(default: Any) -> argparse.ArgumentParser:
    """Return the logging options, taken before the command and after it."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default,
        help=f"least severe log records shown (default: ${LOG_LEVEL_VARIABLE}, else INFO)",
    )
    options.add_argument(
        "--log-format",
        type=str.lower,
        choices=LOG_FORMATS,
        default=default,
        help=f"text lines, or JSON lines for log collectors (default: ${LOG_FORMAT_VARIABLE}, "
        "else text)",
    )
    return options


def _history_options() -> argparse.ArgumentParser:
    """Return the options of the subcommands that read history: config, CSVs, universe."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    options.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="FEED=PATH",
        help="history CSV for a feed (repeat per feed)",
    )
    options.add_argument(
        "--sample", action="store_true", help="use the bundled sample history for eth, btc, rut"
    )
    options.add_argument(
        "--universe",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="folder (or file) of daily <BASE>USDT_1d.csv altcoin histories: adds altseason_index,"
        " altseason_members and altseason_skipped (BTC from --data; repeatable)",
    )
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moodring",
        description="Streaming alerts for cross-market divergence.",
        parents=[_log_flags(None)],
    )
    parser.add_argument("--version", action="version", version=f"moodring {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    logging_flags = _log_flags(argparse.SUPPRESS)  # after the command: set only when given

    def command(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[*parents, logging_flags])

    run = command("run", "run the daemon: live feeds, rules and alerts")
    run.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    run.add_argument(
        "--record", type=Path, metavar="DIR", help="append closed bars to DIR/<feed>_<tf>.csv"
    )
    run.set_defaults(handler=_run)

    demo = command(
        "demo",
        "offline, no keys: replay bundled ETH/BTC/Russell 2000 history, then run live "
        "on a fake Binance; alerts and chart paths to the console",
    )
    demo.add_argument("--speed", type=float, default=10.0, help="replay speed (x real time)")
    demo.add_argument("--for", dest="duration", type=float, help="stop after this many seconds")
    demo.add_argument("--record", type=Path, metavar="DIR", help="append closed bars to DIR")
    demo.add_argument(
        "--charts", type=Path, metavar="DIR", help="save the charts here (default: a new temp dir)"
    )
    demo.add_argument(
        "--verbose", action="store_true", help="log everything, the fake exchange's too"
    )
    demo.set_defaults(handler=_demo)

    history = _history_options()
    backtest = command(
        "backtest", "replay history CSVs through the engine and write metric values", history
    )
    backtest.add_argument("--from", dest="start", type=_date, help="first bar date (UTC)")
    backtest.add_argument("--to", dest="end", type=_date, help="last bar date (UTC, inclusive)")
    backtest.add_argument("--metrics-out", type=Path, help="write metric values to this CSV")
    backtest.add_argument(
        "--format",
        choices=("json", "table", "summary"),
        default="json",
        help="alerts on stdout: one JSON object per line (default), a table for people, or "
        "a summary: alerts per rule and per month",
    )
    backtest.add_argument(
        "--streaming",
        action="store_true",
        help="feed bars one by one through the live engine instead of the vectorised path",
    )
    backtest.add_argument(
        "--report",
        type=Path,
        metavar="FILE.html",
        help="also write a self-contained HTML report: summary, a chart per rule, the alerts "
        "(needs pip install 'moodring[report]')",
    )
    backtest.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="RULE.PATH=START:STOP:STEP",
        help="re-run one rule for each value of one of its numbers, e.g. "
        "eth-rut-decoupling.condition.below=0.2:0.6:0.05; prints a line per value instead "
        "of the alerts (a second --sweep of the same rule makes a grid)",
    )
    backtest.set_defaults(handler=_backtest)

    silence = command("silence", "mute a rule for a while, list or clear silences")
    silence.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    silence.add_argument(
        "rule",
        nargs="?",
        help="the rule to silence (or to --clear): a name, a wildcard pattern ('*-decoupling') "
        "or a watchlist's rule template as written ('{base}-decoupling')",
    )
    silence.add_argument(
        "--template",
        action="store_true",
        help="silence the whole template RULE was expanded from (every member of its watchlist)",
    )
    silence.add_argument("--for", dest="duration", help="how long, e.g. 2h, 30m, 1d, 1h30m")
    silence.add_argument("--reason", default="", help="why (shown in --list and in the log)")
    silence.add_argument("--list", action="store_true", help="show the silences in force")
    silence.add_argument("--clear", action="store_true", help="remove RULE's silence (or all)")
    silence.set_defaults(handler=_silence)

    outbox = command("outbox", "list undelivered alerts (pending and dead); requeue or drop them")
    outbox.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    action = outbox.add_mutually_exclusive_group()
    action.add_argument(
        "--retry", metavar="ID", help="requeue delivery ID (dead or pending): it is tried anew"
    )
    action.add_argument("--all-dead", action="store_true", help="requeue every dead delivery")
    action.add_argument("--drop", metavar="ID", help="delete delivery ID: it is never sent")
    outbox.set_defaults(handler=_outbox)

    test_alert = command("test-alert", "send a test message with a chart to every configured URL")
    test_alert.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    test_alert.set_defaults(handler=_test_alert)

    digest = command(
        "digest",
        "print the digest (ETH vs small caps, ETH/BTC, MFI, altseason) from history",
        history,
    )
    digest.add_argument(
        "--at",
        type=_date,
        metavar="DATE",
        help="when the digest is made (UTC unless given): it sees the bars closed by then "
        "(default: when the last crypto bar closed)",
    )
    digest.add_argument("--chart", type=Path, metavar="PNG", help="also write the chart here")
    digest.add_argument(
        "--send", action="store_true", help="send it with its chart to the notify URLs"
    )
    digest.set_defaults(handler=_digest)

    check = command("check-config", "validate the config (templates and references too) and exit")
    check.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    check.set_defaults(handler=_check_config)

    feeds = command(
        "check-feeds", "connect to every configured feed once; exit 0 only if all are usable"
    )
    feeds.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    feeds.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="seconds for each feed's REST API and for its websocket (default 5)",
    )
    feeds.set_defaults(handler=_check_feeds)

    show = command(
        "show-config", "print the effective config (defaults, file, environment, secret files)"
    )
    show.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    show.add_argument(
        "--expanded",
        action="store_true",
        help="show every for_each template as the entries it expands to, one per member",
    )
    show.set_defaults(handler=_show_config)

    init = command("init", "write a commented starter config that extends the shipped one")
    init.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="where (default: $XDG_CONFIG_HOME/moodring/moodring.yaml)",
    )
    init.add_argument(
        "--system", action="store_true", help="write /etc/moodring/moodring.yaml instead"
    )
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(handler=_init)

    health = command(
        "healthcheck", "ask the running daemon's /healthz (the configured port): exit 0 or 1"
    )
    health.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    health.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)"
    )
    health.set_defaults(handler=_healthcheck)

    completion = command("completion", "print a shell completion script (bash or zsh)")
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    completion.set_defaults(handler=_completion, parser=parser)
    return parser


def _settings(args: argparse.Namespace) -> tuple[Path, Settings]:
    """Return the config file chosen by ``-c`` or discovery, and its settings."""
    loaded = _load(args)
    return loaded.file, loaded.settings


def _load(args: argparse.Namespace, quiet: bool = False) -> LoadedConfig:
    """Return the loaded config chosen by ``-c`` or discovery (quiet: without a log line)."""
    from moodring.configfile import find_config, load_config
    from moodring.settings import DEFAULT_CONFIG

    path = find_config(args.config)
    if not quiet:
        log.info("config: %s%s", path, " (built-in default)" if path == DEFAULT_CONFIG else "")
    return load_config(path)


def _check_config(args: argparse.Namespace) -> int:
    from moodring.configfile import config_error
    from moodring.rules.preview import render_problems

    path, settings = _settings(args)
    problems = render_problems(settings)
    if problems:
        raise config_error(path, problems, settings)
    counts = (len(settings.feeds), len(settings.metrics), len(settings.rules))
    print(f"{path}: ok ({counts[0]} feeds, {counts[1]} metrics, {counts[2]} rules)")
    for name in _unranked(settings):
        print(
            f"watchlist {name} is dynamic: its members are ranked at run time (in a backtest "
            "from --universe); its templates were checked with a stand-in member"
        )
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"must be between 0 and 300 seconds, not {text}")
    return value


def _check_feeds(args: argparse.Namespace) -> int:
    import asyncio

    from moodring.feeds.check import check_feeds
    from moodring.logs import redact

    path, settings = _settings(args)
    if not settings.feeds:
        print(f"{path}: no feeds configured")
        return 1
    results = asyncio.run(check_feeds(settings.feeds, args.timeout))
    for result in results:
        print(redact(result.line()))
    usable = sum(1 for r in results if r.usable)
    print(f"{usable} of {len(results)} feed(s) usable")
    return 0 if all(r.usable is not False for r in results) else 1


def _unranked(settings: Settings) -> list[str]:
    """Return the dynamic watchlists not ranked yet (their templates have no members)."""
    return [n for n, w in settings.watchlists.items() if w.dynamic and not settings.members(n)]


def _show_config(args: argparse.Namespace) -> int:
    from moodring.configfile import show_config

    loaded = _load(args)
    print(show_config(loaded.settings, loaded.written, expanded=args.expanded), end="")
    return 0


def _init(args: argparse.Namespace) -> int:
    from moodring.configfile import SYSTEM_CONFIG, config_candidates
    from moodring.errors import StateError

    if args.system and args.path is not None:
        raise UsageError(f"init takes PATH or --system, not both (PATH {args.path})")
    path = SYSTEM_CONFIG if args.system else args.path or config_candidates()[1]
    path = path.expanduser()
    if path.is_dir():
        raise UsageError(f"init {path}: is a folder; give the file to write")
    if path.exists() and not args.force:
        raise DataError(f"init {path}: the file exists; --force replaces it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # URLs hold tokens
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write((DEFAULTS / "starter.yaml").read_text(encoding="utf-8"))
    except OSError as exc:
        raise StateError(f"init {path}: cannot write it: {exc.strerror or exc}") from None
    found = path.resolve() in {p.resolve() for p in config_candidates()}
    use = "" if found else f" -c {path}"
    print(f"wrote {path}: it extends the shipped config and holds only what you change.")
    print(
        "Next: put your alert URL under notify.urls (or set MOODRING_NOTIFY__URLS), then run "
        f"`moodring check-config{use}`, `moodring test-alert{use}` and `moodring run{use}`."
    )
    return 0


def _healthcheck(args: argparse.Namespace) -> int:
    """Print one line on the daemon's health (its /healthz); 0 healthy, 1 not."""
    import urllib.error
    import urllib.request

    http = _load(args, quiet=True).settings.http
    if not http.enabled:
        print("unhealthy: http.enabled is false, so there is no /healthz to ask")
        return 1
    if http.port == 0:
        print("unhealthy: http.port is 0 (any free port): set a fixed port to check health")
        return 1
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(http.host, http.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{http.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"unhealthy: nothing answers at {url} ({reason})")
        return 1
    try:
        health = json.loads(body)
    except ValueError:
        health = {}
    health = health if isinstance(health, dict) else {}
    parts = [str(health["status"])] if health.get("status") else []
    feeds = health.get("feeds") or {}
    parts += [", ".join(f"{feed} {state}" for feed, state in feeds.items())] if feeds else []
    parts += [f"{what}: {why}" for what, why in (health.get("problems") or {}).items()]
    detail = "; ".join(parts)
    verdict = "healthy" if status == 200 else "unhealthy"
    print(f"{verdict}: {url} answered {status}{f' ({detail})' if detail else ''}")
    return 0 if status == 200 else 1


def _completion(args: argparse.Namespace) -> int:
    import shtab

    for action in _actions(args.parser):
        if action.type is Path:
            action.complete = shtab.DIRECTORY if action.metavar == "DIR" else shtab.FILE  # type: ignore[attr-defined]
    print(shtab.complete(args.parser, shell=args.shell), end="")
    return 0


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Return every option and argument of a parser and its subcommands."""
    found = []
    for action in parser._actions:
        found.append(action)
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _actions(sub)
    return found


def _date(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or datetime: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _shown(moment: datetime) -> str:
    """Return a --from/--to/--at moment as given: a date, or an ISO time."""
    if moment.utcoffset() == timedelta(0) and moment.time() == datetime.min.time():
        return moment.date().isoformat()
    return moment.isoformat()


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from moodring import notifyurls
    from moodring.delivery.worker import DELIVERY_WORKER
    from moodring.service.daemon import Daemon  # ccxt is heavy: only the daemon pays for it
    from moodring.statedir import check_dir

    notifyurls.use_remote(DELIVERY_WORKER.ask)  # apprise stays out of the daemon's memory
    path, settings = _settings(args)
    if args.record is not None:
        check_dir(args.record, "--record directory")

    async def main() -> int:
        return await Daemon(settings, record=args.record, config_path=path).run()

    return asyncio.run(main())


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from moodring.demo import run_demo
    from moodring.statedir import check_dir

    if args.record is not None:
        check_dir(args.record, "--record directory")
    if args.charts is not None:
        check_dir(args.charts, "--charts directory")
    try:
        return asyncio.run(
            run_demo(
                speed=args.speed,
                duration=args.duration,
                record=args.record,
                charts=args.charts,
                verbose=args.verbose,
            )
        )
    except KeyboardInterrupt:
        return 130


def _data_paths(args: argparse.Namespace) -> dict[str, Path]:
    """Return the history CSV of each feed given by ``--data FEED=PATH`` and ``--sample``."""
    paths = dict(_feed_path(item) for item in args.data)
    if args.sample:
        for feed in ("eth", "btc", "rut"):
            paths.setdefault(feed, SAMPLES / f"{feed}_1d.csv")
    return paths


def _history(args: argparse.Namespace, settings: Settings) -> dict[str, FeedHistory]:
    """Return the history CSVs of ``--data FEED=PATH`` (and ``--sample``), loaded per feed.

    A watchlist member's feed without ``--data`` reads its ``<BASE><QUOTE>_1d.csv`` of
    ``--universe``.
    """
    from moodring.backtest.csvfile import load_csv
    from moodring.backtest.runner import clean_history
    from moodring.backtest.watchlist import member_files
    from moodring.market.calendar import calendar_named

    paths = _data_paths(args)
    members = member_files(settings, _universe_paths(args)) if settings.expansion.names else {}
    for feed, path in members.items():
        paths.setdefault(feed, path)
    lacking = [
        feed for feed in settings.feeds if settings.origin("feeds", feed) and feed not in paths
    ]
    if lacking:
        log.warning(
            "no history for watchlist member feed(s) %s: give --universe DIR with their "
            "<BASE><QUOTE>_1d.csv files (or --data FEED=PATH)",
            ", ".join(lacking),
        )
    if not paths:
        raise UsageError("no history given: use --data FEED=PATH (or --sample)")
    unknown = sorted(set(paths) - set(settings.feeds))
    if unknown:
        raise UsageError(
            f"--data names unknown feed(s) {unknown}; config has {sorted(settings.feeds)}"
        )
    history: dict[str, FeedHistory] = {}
    for feed, path in paths.items():
        input_file(f"--data {feed}={path}", path)
    for feed in (f for f in settings.feeds if f in paths):
        loaded = load_csv(paths[feed])
        for line, reason in loaded.skipped:
            log.warning("%s:%d: row skipped: %s", paths[feed], line, reason)
        calendar = settings.feeds[feed].session_calendar
        try:
            clean = clean_history(loaded.bars, calendar_named(calendar) if calendar else None)
        except ValueError as exc:
            raise DataError(f"--data {feed}={paths[feed]}: {exc}") from None
        _report_cleaning(feed, paths[feed], calendar, clean)
        history[feed] = clean.history
        log.info("%s: %d bars from %s", feed, len(history[feed].bars), paths[feed])
    return history


def _report_cleaning(feed: str, path: Path, calendar: str | None, clean: CleanHistory) -> None:
    """Log, one line each, the rows merged into shared bars and the closed-market rows dropped."""
    from moodring.market.timeframe import Timeframe

    step = clean.history.step_ms
    if clean.merged_rows:
        bars = _first_times(clean.merged_bars, step)
        log.warning(
            "%s: %d row(s) of %s fell into a %s bar another row had opened and were merged into "
            "it (first open, highest high, lowest low, last close, summed volume): %s",
            feed,
            clean.merged_rows,
            path,
            Timeframe.of_length(step),
            bars,
        )
    if clean.closed.shape[0]:
        days = _first_times(clean.closed, step)
        log.warning(
            "%s: %d row(s) of %s on no %s session dropped: %s (calendar: none on the feed "
            "keeps them)",
            feed,
            clean.closed.shape[0],
            path,
            (calendar or "").upper(),
            days,
        )


def _first_times(times: np.ndarray, step_ms: int, shown: int = 5) -> str:
    """Return the first ``shown`` bar times for a log line (dates for daily bars)."""
    from moodring.times import iso_time

    texts = [iso_time(t) for t in times[:shown].tolist()]
    if step_ms % 86_400_000 == 0:
        texts = [text[:10] for text in texts]
    more = times.shape[0] - shown
    return ", ".join(texts) + (f" and {more} more" if more > 0 else "")


def _backtest(args: argparse.Namespace) -> int:
    import numpy as np

    from moodring.backtest.runner import (
        evaluate_rules,
        find_jumps,
        run_batch,
        run_streaming,
        runnable_metrics,
    )
    from moodring.backtest.table import MetricTable
    from moodring.times import iso_time

    config_path, settings = _settings(args)
    for flag, path in (("--metrics-out", args.metrics_out), ("--report", args.report)):
        if path is not None:
            output_file(flag, path)
    start_ms, end_ms = _window(args)
    settings, memberships = _ranked(args, settings, span=(start_ms, end_ms))
    tuning = _tuning(args, settings, config_path)
    configured = settings
    if memberships is not None:  # the members' rules are followed to tell what a daemon would
        settings = memberships.followed(settings)
    history = _in_window(args, _history(args, settings), start_ms, end_ms)

    altseason = _altseason(settings, args.universe, history) if _has_index(args, settings) else None
    metrics, missing = runnable_metrics(settings, set(history))
    if missing:
        log.warning("no data for the inputs of %s: skipped", ", ".join(missing))
    alerts: list[Alert] = []
    jumps = find_jumps(settings, history, metrics)
    if not metrics and altseason is None:
        raise DataError("none of the configured metrics has data for all its feeds")
    if args.streaming:  # the altseason columns are set into the engine day by day
        externals = altseason.columns() if altseason is not None else None
        full = run_streaming(settings, history, metrics, alerts, externals, on_jump=_report_jump)
    else:
        full = (
            run_batch(settings, history, metrics) if metrics else MetricTable(np.empty(0, np.int64))
        )
        for jump in jumps:
            _report_jump(jump)
    if altseason is not None:
        full = MetricTable.from_series(full.series() | altseason.columns())
    if not args.streaming:  # the rules read every column, the altseason index's too
        alerts = evaluate_rules(settings, full, history, jumps)
    if memberships is not None:
        alerts = memberships.told(alerts, configured)
        settings = configured
    table = full.between(start_ms, end_ms)
    if not len(table.time):
        raise DataError(f"no bars {_window_text(args)}: {_data_span(history)}")
    shown = [a for a in alerts if (start_ms or 0) <= a.time < (end_ms or 2**62)]
    step = min(h.step_ms for h in history.values())
    span = (int(table.time[0]), int(table.time[-1]) + step) if len(table.time) else (0, 0)
    if args.format == "summary" and not args.sweep:  # a sweep prints a line per value instead
        print_summary(shown, [rule.name for rule in settings.rules], span)
    elif not args.sweep:
        print_alerts(shown, args.format)
    if tuning is not None:
        from moodring.backtest.sweep import SweepError

        try:
            tuning.run(full, history, jumps, shown, span, args.format)
        except SweepError as exc:  # raised here only when the data cannot serve the sweep
            raise DataError(str(exc)) from None
    if args.metrics_out is not None:
        from moodring.statedir import state_file

        with state_file(args.metrics_out, "--metrics-out"):
            table.write_csv(args.metrics_out)
        log.info("wrote %d rows to %s", len(table.time), args.metrics_out)
    for name, column in table.columns.items():
        filled = np.flatnonzero(~np.isnan(column))
        if filled.size:
            at = int(table.time[filled[-1]])
            log.info("last %s = %.6g at %s", name, column[filled[-1]], iso_time(at))
    return 0


def _window(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """Return ``--from`` and ``--to`` as epoch ms [start, end); a whole-day --to includes it."""
    if args.start is not None and args.end is not None and args.start > args.end:
        raise UsageError(f"--from {_shown(args.start)} is later than --to {_shown(args.end)}")
    end_ms = None
    if args.end is not None:
        whole_day = args.end.time() == datetime.min.time()
        end_ms = _ms(args.end + (timedelta(days=1) if whole_day else timedelta(milliseconds=1)))
    return _ms(args.start), end_ms


def _in_window(
    args: argparse.Namespace,
    history: dict[str, FeedHistory],
    start_ms: int | None,
    end_ms: int | None,
) -> dict[str, FeedHistory]:
    """Return the history up to ``--to``; DataError when the window misses the data."""
    from moodring.times import iso_time

    span = _data_span(history)
    firsts = [int(h.bars.time[0]) for h in history.values() if len(h.bars)]
    ends = [int(h.bars.time[-1]) + h.step_ms for h in history.values() if len(h.bars)]
    if end_ms is not None and firsts and end_ms <= min(firsts):
        raise DataError(f"--to {_shown(args.end)} is before the data: {span}")
    if start_ms is not None and ends and start_ms >= max(ends):
        raise DataError(f"--from {_shown(args.start)} is after the data: {span}")
    cut = {}
    for feed, h in history.items():
        cut[feed] = h.until(end_ms)
        if not len(cut[feed].bars):
            first = iso_time(int(h.bars.time[0]))[:10] if len(h.bars) else "-"
            log.warning(
                "%s: no bars before --to %s (its data starts %s): left out",
                feed,
                _shown(args.end),
                first,
            )
            del cut[feed]
    return cut


def _data_span(history: dict[str, FeedHistory]) -> str:
    """Return where the data lies, for an error: ``the data runs from A to B``."""
    from moodring.times import iso_time

    firsts = [int(h.bars.time[0]) for h in history.values() if len(h.bars)]
    lasts = [int(h.bars.time[-1]) for h in history.values() if len(h.bars)]
    if not firsts:
        return "there are no bars"
    daily = all(h.step_ms % 86_400_000 == 0 for h in history.values())
    first, last = iso_time(min(firsts)), iso_time(max(lasts))
    if daily:
        first, last = first[:10], last[:10]
    return f"the data runs from {first} to {last}"


def _window_text(args: argparse.Namespace) -> str:
    """Return the window asked for, as given: ``in --from 2025-01-01 --to 2025-02-01``."""
    bounds = (("--from", args.start), ("--to", args.end))
    given = " ".join(f"{flag} {_shown(value)}" for flag, value in bounds if value is not None)
    return f"in {given}" if given else "at all"


def _tuning(args: argparse.Namespace, settings: Settings, config: Path) -> Tuning | None:
    """Return the sweeps and report asked for, checked before the backtest runs."""
    if not args.sweep and args.report is None:
        return None
    from moodring.backtest.sweep import SweepError
    from moodring.report.tuning import Tuning

    try:
        return Tuning.of(settings, args.sweep, args.report, config, _data_paths(args))
    except SweepError as exc:
        raise UsageError(str(exc)) from None


def _report_jump(jump: Jump) -> None:
    log.warning("%s", jump.describe())


def _universe_paths(args: argparse.Namespace) -> list[Path]:
    """Return the ``--universe`` folders and files, each checked to exist."""
    for path in args.universe:
        if not path.exists():
            raise UsageError(f"--universe {path}: no such folder or file")
    return list(args.universe)


def _has_index(args: argparse.Namespace, settings: Settings) -> bool:
    """Return whether ``--universe`` adds the Altcoin Season Index (not only members' history)."""
    return bool(args.universe) and (settings.altseason is not None or not settings.watchlists)


def _ranked(
    args: argparse.Namespace,
    settings: Settings,
    *,
    span: tuple[int | None, int | None] = (None, None),
    moment: bool = False,
    at_ms: int | None = None,
) -> tuple[Settings, MembershipLog | None]:
    """Rank the dynamic watchlists from ``--universe`` and expand their templates.

    For a backtest (``span``): every coin that was a member in the span, and when; for one
    ``moment`` (the digest's): the members of the last ranking closed by ``at_ms`` (default:
    the universe's last day).
    """
    from moodring.backtest.universe import load_universe
    from moodring.backtest.watchlist import Membership, MembershipLog, ranked_members, ranking
    from moodring.configfile import with_members
    from moodring.expansion import SECTIONS

    used = {w for section in SECTIONS for w in settings.expansion.templates(section).values()}
    dynamic = {n: w for n, w in settings.watchlists.items() if w.dynamic and n in used}
    if not dynamic:
        return settings, None
    if not args.universe:
        name = next(iter(dynamic))
        raise UsageError(
            f"watchlist {name} is dynamic (top {dynamic[name].top}): give --universe DIR "
            f"with <BASE>{dynamic[name].quote}_1d.csv files to rank its members"
        )
    paths = _universe_paths(args)
    members: dict[str, tuple[Member, ...]] = {}
    lists: dict[str, Membership] = {}
    for name, config in dynamic.items():
        rank = ranking(load_universe(paths, config.quote), config)
        if moment:
            last = int(rank.days[-1]) + 86_400_000 if rank.days.size else 0
            at = at_ms if at_ms is not None else last
            members[name] = ranked_members(rank, at, config.quote)
        else:
            lists[name] = Membership.of(name, config, rank, *span)
            members[name] = lists[name].members()
        shown = ", ".join(m.base for m in members[name][:10])
        more = f" and {len(members[name]) - 10} more" if len(members[name]) > 10 else ""
        log.info(
            "watchlist %s: %d member(s) ranked from --universe: %s%s",
            name,
            len(members[name]),
            shown,
            more,
        )
    settings = with_members(settings, members)
    return settings, MembershipLog(lists) if lists else None


def _altseason(
    settings: Settings, paths: list[Path], history: dict[str, FeedHistory]
) -> AltseasonSeries:
    """Compute the Altcoin Season Index per BTC day from universe files and BTC's history."""
    from moodring.backtest.universe import load_universe
    from moodring.market.resample import resample
    from moodring.market.timeframe import Timeframe
    from moodring.metrics.altseason import altseason_series
    from moodring.settings import AltseasonConfig

    config = settings.altseason or AltseasonConfig()
    names = [config.btc] if config.btc in settings.feeds else []
    names += [n for n, f in settings.feeds.items() if f.symbol.upper() == config.btc.upper()]
    feed = next((name for name in names if name in history), None)
    if feed is None:
        hint = f"--data {names[0]}=PATH" if names else f"a feed named or with symbol {config.btc!r}"
        raise UsageError(f"--universe needs BTC's history (altseason.btc): give {hint}")
    for path in paths:
        if not path.exists():
            raise UsageError(f"--universe {path}: no such folder or file")
    coins = load_universe(paths, config.quote)
    if not coins:
        raise UsageError(f"--universe: no <BASE>{config.quote}_1d.csv files in {paths}")
    btc = history[feed]
    daily = resample(btc.bars, btc.step_ms, Timeframe.parse("1d"))
    log.info("altseason: %d coins, BTC from feed %s", len(coins), feed)
    return altseason_series(
        {base: coin.daily() for base, coin in coins.items()},
        (daily.time, daily.close),
        top=config.top,
        days=config.days,
        volume_days=config.volume_days,
        rules=config.rules(),
    )


def _silence(args: argparse.Namespace) -> int:
    from moodring.rules.silences import Silences
    from moodring.statedir import check_dir, state_file
    from moodring.times import format_duration, iso_time, parse_duration

    _, settings = _settings(args)
    path = settings.resolved_state_dir() / "silences.json"
    silences = Silences(path)
    if args.list:
        with state_file(path, "silences"):
            active = silences.active()
        for s in active:
            left = format_duration(s.until - time.time())
            covered = _covered(settings, s.rule)
            rule = s.rule if covered is None else f"{s.rule} ({len(covered)} rule(s) now)"
            print(f"{rule}  until {iso_time(int(s.until * 1000))} ({left} left)  {s.reason}")
        if not active:
            print("no silences")
        return 0
    target = _silenced_name(settings, args.rule, args.template) if args.rule else None
    if args.clear:
        check_dir(path.parent)
        with state_file(path, "silences"):
            print(f"cleared {silences.clear(target)} silence(s)")
        return 0
    if not target or not args.duration:
        raise UsageError("silence takes RULE --for DURATION (or --list, or --clear [RULE])")
    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    check_dir(path.parent)
    with state_file(path, "silences"):
        s = silences.add(target, seconds, args.reason)
    covered = _covered(settings, s.rule)
    what = s.rule if covered is None else f"{s.rule} ({', '.join(covered) or 'no rule yet'})"
    print(f"silenced {what} until {iso_time(int(s.until * 1000))}")
    return 0


def _silenced_name(settings: Settings, rule: str, template: bool) -> str:
    """Return what ``moodring silence RULE [--template]`` silences; UsageError if nothing."""
    from moodring.rules.silences import is_pattern, is_template

    names = {r.name for r in settings.rules} | {f"stale.{f}" for f in settings.feeds}
    if settings.digest is not None:
        names.add("digest")  # the scheduled digest goes out as the rule "digest"
    templates = set(settings.expansion.templates("rules"))
    if template:
        if rule in templates:
            return rule
        found = settings.template_of(rule)
        if found is None:
            raise UsageError(
                f"--template: {rule!r} is not a rule of a watchlist's template "
                f"(templates: {', '.join(sorted(templates)) or 'none'})"
            )
        return found
    if is_template(rule):
        if rule not in templates:
            raise UsageError(
                f"no rule template {rule!r}; templates: {', '.join(sorted(templates)) or 'none'}"
            )
        return rule
    if is_pattern(rule):
        if not any(fnmatchcase(name, rule) for name in names | templates):
            raise UsageError(f"{rule!r} matches no rule; rules: {', '.join(sorted(names))}")
        return rule
    if rule not in names:
        raise UsageError(f"no rule named {rule!r}; rules: {', '.join(sorted(names))}")
    return rule


def _covered(settings: Settings, silenced: str) -> list[str] | None:
    """Return the rules a pattern's or template's silence mutes now (None: a plain name)."""
    from moodring.rules.silences import covers, is_pattern, is_template

    if not is_pattern(silenced) and not is_template(silenced):
        return None
    names = [r.name for r in settings.rules] + [f"stale.{f}" for f in settings.feeds]
    return [n for n in names if covers(silenced, n, settings.template_of(n))]


def _outbox(args: argparse.Namespace) -> int:
    from moodring.delivery.outbox import Outbox
    from moodring.delivery.sender import mask_url, target_id
    from moodring.errors import StateError
    from moodring.statedir import state_file

    _, settings = _settings(args)
    state = settings.resolved_state_dir()
    if state.exists() and not state.is_dir():
        raise StateError(f"state directory {state}: not a directory")
    path = state / "outbox.sqlite"
    flag, text = ("--retry", args.retry) if args.retry is not None else ("--drop", args.drop)
    number = _delivery_id(flag, text) if text is not None else None
    if not path.is_file():
        if number is not None:
            raise DataError(f"{flag} {number}: there is no outbox at {path}")
        print(f"no outbox at {path}: nothing pending or dead")
        return 0
    names: dict[str, str] = {}
    for target in settings.notify.urls:
        url = target.url.get_secret_value()
        names.setdefault(target_id(url), mask_url(url))
    with state_file(path, "outbox"), Outbox(path) as outbox:
        if args.all_dead:
            requeued = outbox.requeue_dead()
            print(f"requeued {requeued} dead delivery(ies)")
        elif number is not None:
            row = outbox.get(number)
            change = outbox.requeue if flag == "--retry" else outbox.remove
            if row is None or not change(number):
                raise DataError(f"{flag} {number}: no pending or dead delivery has this id")
            requeued = int(flag == "--retry")
            where = names.get(row.target, f"target {row.target} (no longer configured)")
            done = "requeued" if requeued else "dropped"
            print(f"{done} delivery {number} ({row.alert.rule} {row.alert.state}) to {where}")
        else:
            _print_outbox(outbox.undelivered(), names)
            return 0
    if requeued:
        print("a running daemon sends requeued deliveries within a minute")
    return 0


def _delivery_id(flag: str, text: str) -> int:
    """Return a delivery id given on the command line, or a UsageError naming the flag."""
    if not text.isascii() or not text.isdigit():
        raise UsageError(
            f"{flag} takes a delivery id (a number from moodring outbox), not {text!r}"
        )
    return int(text)


def _print_outbox(rows: list[Delivery], names: dict[str, str]) -> None:
    """Print undelivered rows as an aligned table, secrets masked; then the counts."""
    from moodring.logs import redact
    from moodring.times import format_duration, iso_time

    now = time.time()
    header = ("id", "target", "rule", "state", "bar time", "attempts", "age", "last error")
    cells = [header]
    for row in rows:
        target = names.get(row.target, f"{row.target} (no longer configured)")
        age = format_duration(max(0.0, now - row.added))
        cells.append(
            (
                str(row.id),
                target,
                row.alert.rule,
                row.state,
                iso_time(row.alert.time),
                str(row.attempts),
                age,
                redact(row.error or "-"),
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=False)), c[-1])
    dead = sum(row.state == "dead" for row in rows)
    print(f"{len(rows) - dead} pending, {dead} dead")


def _test_alert(args: argparse.Namespace) -> int:
    _, settings = _settings(args)
    if not settings.notify.urls:
        raise DataError(
            "no notify.urls configured (set them in the config or MOODRING_NOTIFY__URLS)"
        )
    import asyncio

    return asyncio.run(_send_test_alerts(settings))


async def _send_test_alerts(settings: Settings) -> int:
    from moodring.charts.render import render_with_budget
    from moodring.delivery.sender import Sender, mask_url
    from moodring.rules.alert import Alert
    from moodring.statedir import scratch_dir

    chart = sample_chart()
    png = await render_with_budget(chart) if chart else None
    sender = Sender(settings.notify)
    failures = 0
    with scratch_dir() as tmp:
        attachment = None
        if png is not None:
            attachment = tmp / "moodring-test.png"
            attachment.write_bytes(png)
        for target in settings.notify.urls:
            url = target.url.get_secret_value()
            alert = Alert(
                "test-alert",
                "firing",
                int(time.time() * 1000),
                "eth_rut_corr",
                math.nan,
                "info",
                "moodring test alert",
                f"If you can read this, moodring reaches {mask_url(url)}. The chart shows the "
                "bundled sample: ETH against the Russell 2000 and their 30-day correlation.",
            )
            ok = await sender.send(url, alert, attachment)
            failures += not ok
            print(f"{'OK    ' if ok else 'FAILED'}  {mask_url(url)}")
    return 1 if failures else 0


def sample_chart() -> dict[str, Any] | None:
    """Return the chart of a correlation alert on the bundled sample history."""
    from moodring.backtest.csvfile import load_csv
    from moodring.backtest.runner import FeedHistory, merged_bars
    from moodring.configfile import load_settings
    from moodring.pipeline import Pipeline
    from moodring.settings import RuleConfig

    base = load_settings()
    rule = RuleConfig(
        name="sample",
        metric="eth_rut_corr",
        condition={"below": 0.3},
        clear={"above": 0.45},
        chart=True,
    )
    settings = base.model_copy(
        update={"metrics": {"eth_rut_corr": base.metrics["eth_rut_corr"]}, "rules": (rule,)}
    )
    history = {f: FeedHistory.of(load_csv(SAMPLES / f"{f}_1d.csv").bars) for f in ("eth", "rut")}
    engine = Pipeline(settings)
    for feed, t, bar in merged_bars(history):
        engine.on_candle(feed, t, bar, closed=True, length_ms=history[feed].step_ms)
    chart = engine.chart_data(rule, engine.metrics["eth_rut_corr"].time)
    if chart is not None:
        chart["title"] = "moodring test alert: ETH vs the Russell 2000 (bundled sample)"
    return chart


def _digest(args: argparse.Namespace) -> int:
    from moodring.digest.command import digest_from_history, send_digest

    _, settings = _settings(args)
    if args.chart is not None:
        output_file("--chart", args.chart)
    if args.send and not settings.notify.urls:
        raise DataError(
            "no notify.urls configured (set them in the config or MOODRING_NOTIFY__URLS)"
        )
    settings, _ = _ranked(args, settings, moment=True, at_ms=_ms(args.at))
    history = _history(args, settings)
    externals = None
    if _has_index(args, settings):
        index = _altseason(settings, args.universe, history).columns()["altseason_index"]
        externals = {"altseason_index": index}
    _check_at(args, history)
    digest = digest_from_history(settings, history, _ms(args.at), externals)
    print(digest.title)
    print(digest.message)
    if args.chart is not None:
        from moodring.charts.render import render_png

        if digest.chart is None:
            log.warning("digest.chart is off in the config: no chart written")
        else:
            from moodring.statedir import state_file

            png = render_png(digest.chart)
            with state_file(args.chart, "--chart"):
                args.chart.write_bytes(png)
    if args.send:
        import asyncio

        return asyncio.run(send_digest(settings, digest))
    return 0


def _check_at(args: argparse.Namespace, history: dict[str, FeedHistory]) -> None:
    """Raise DataError when ``--at`` comes before the first bar of the history closed."""
    closes = [int(h.bars.time[0]) + h.step_ms for h in history.values() if len(h.bars)]
    if args.at is not None and closes and _ms(args.at) < min(closes):  # type: ignore[operator]
        raise DataError(f"--at {_shown(args.at)} is before the data: {_data_span(history)}")


def print_alerts(alerts: list[Alert], style: str) -> None:
    """Print alerts as JSON lines, or as an aligned table for people."""
    from moodring.times import iso_time

    rows = [
        {
            "time": iso_time(a.time),
            "rule": a.rule,
            "state": a.state,
            "metric": a.metric,
            "value": None if math.isnan(a.value) else a.value,
            "severity": a.severity,
            "message": a.message,
        }
        for a in alerts
    ]
    if style == "json":
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    header = ("time", "rule", "state", "value", "severity", "message")
    cells = [header] + [
        tuple("" if r[k] is None else f"{r[k]:.4g}" if k == "value" else str(r[k]) for k in header)
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=False)), c[-1])


def print_summary(alerts: list[Alert], rules: list[str], span: tuple[int, int]) -> None:
    """Print how many alerts each rule sent (firing, resolved) and how many a month."""
    from moodring.times import iso_time

    counts = {rule: [0, 0] for rule in rules}
    for alert in alerts:
        counts.setdefault(alert.rule, [0, 0])[alert.state == "resolved"] += 1
    width = max(len("total"), *(len(rule) for rule in counts))
    print(f"{'rule':<{width}}  firing  resolved")
    for rule, (firing, resolved) in counts.items():
        print(f"{rule:<{width}}  {firing:>6}  {resolved:>8}")
    firing = sum(c[0] for c in counts.values())
    print(f"{'total':<{width}}  {firing:>6}  {len(alerts) - firing:>8}")
    months = (span[1] - span[0]) / (365.25 / 12 * 86_400_000)
    first, last = iso_time(span[0])[:10], iso_time(span[1] - 1)[:10]
    rate = f"{len(alerts) / months:.2f} a month" if months > 0 else "no time span"
    print(f"{len(alerts)} alerts in {months:.1f} months ({first} to {last}): {rate}")


def _feed_path(item: str) -> tuple[str, Path]:
    feed, sep, path = item.partition("=")
    if not sep or not feed or not path:
        raise UsageError(f"--data takes FEED=PATH, got {item!r}")
    return feed, Path(path)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


if __name__ == "__main__":
    sys.exit(main())
