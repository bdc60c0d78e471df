"""Logging for the daemon and the CLI: one line per event on stderr, secrets redacted.

Text lines (the default): under systemd with ``StandardError=journal``, journald stamps each
line itself, so the timestamp is left out; anywhere else each line starts with an ISO-8601
local time. JSON lines (``--log-format json``, ``MOODRING_LOG_FORMAT=json``): one object per
record with ``time``, ``level``, ``logger``, ``message``, the record's structured fields
(``extra=``: ``feed``, ``rule``, ``alert_key`` …) and ``exception`` when there is one.

Redaction happens on the final text of every record that reaches the handler (message with
its arguments, exception and stack text): each registered secret (``register_secrets``, called
by ``load_settings`` for every ``SecretStr`` of the settings) becomes ``***``, and so do the
credentials and token-like parts of anything that looks like a URL (``user:pass@``, a
Telegram bot token, long mixed letter-and-digit path segments, ``?token=`` style values).
A JSON line's structured fields are redacted the same way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TextIO

from pydantic import BaseModel, SecretStr

MASK = "***"
HANDLER_NAME = "moodring"
MIN_SECRET_LENGTH = 4  # shorter "secrets" would turn every log line into asterisks
NOISY = ("apprise", "urllib3")  # at DEBUG they log whole URLs, tokens included

JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
# what every LogRecord has; anything else on a record came by ``extra=``
_RECORD_FIELDS = frozenset(
    (*vars(logging.LogRecord("", 0, "", 0, "", (), None)), "message", "asctime", "taskName")
)

_secrets: set[str] = set()

_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s'\"<>]+)")
_USERINFO = re.compile(r"^([^/@?#]*)@")
_TGRAM_TOKEN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}")
_SECRET_QUERY = re.compile(
    r"((?:^|[&;])[^=&;]*(?:token|key|secret|pass|auth|sig)[^=&;]*=)[^&;#]+", re.IGNORECASE
)
_SEGMENT = re.compile(r"[^/:?&=#,;@.]+")


def setup_logging(
    level: int | str = logging.INFO, stream: TextIO | None = None, fmt: str = "text"
) -> None:
    """Log to stderr (or ``stream``) one line per record, redacted; replaces an earlier setup.

    ``fmt`` is ``text`` (a line for people) or ``json`` (an object per line for collectors).
    """
    numeric = _level(level)
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == HANDLER_NAME:
            root.removeHandler(handler)
    new = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    new.set_name(HANDLER_NAME)
    journald = connected_to_journal(stream if stream is not None else sys.stderr)
    if fmt == "json":
        new.setFormatter(JsonFormatter())
    else:
        new.setFormatter(_Formatter(JOURNAL_FORMAT if journald else PLAIN_FORMAT))
    new.addFilter(RedactFilter())
    root.addHandler(new)
    root.setLevel(numeric)
    for name in NOISY:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))


def connected_to_journal(stream: TextIO) -> bool:
    """Return whether ``stream`` is the journald stream systemd named in ``$JOURNAL_STREAM``."""
    wanted = os.environ.get("JOURNAL_STREAM", "")
    if not wanted:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return wanted == f"{st.st_dev}:{st.st_ino}"


def register_secrets(settings: BaseModel) -> None:
    """Add every ``SecretStr`` value in ``settings`` (and a URL's token parts) to the redactions."""
    for secret in _secret_values(settings):
        for text in (secret, *_url_tokens(secret)):
            if len(text) >= MIN_SECRET_LENGTH:
                _secrets.add(text)


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and URL credentials or tokens replaced by ***."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL.sub(_mask_url, text)
    return _TGRAM_TOKEN.sub(MASK, text)


def looks_secret(url: str) -> bool:
    """Return whether a URL carries credentials or tokens (what ``redact`` would mask in it)."""
    return _URL.sub(_mask_url, url) != url or _TGRAM_TOKEN.search(url) is not None


class RedactFilter(logging.Filter):
    """Rewrite each record's final message, exception and stack text through ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format: let the handler report it as usual
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when each record comes."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record to the current ``sys.stderr``."""
        self.stream = sys.stderr
        super().emit(record)


class _Formatter(logging.Formatter):
    """Format with an ISO-8601 local timestamp (milliseconds and UTC offset)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """Return the record's time as ISO-8601 with milliseconds and UTC offset."""
        moment = datetime.fromtimestamp(record.created).astimezone()
        return moment.isoformat(timespec="milliseconds")


class JsonFormatter(_Formatter):
    """Format a record as one JSON object: time, level, logger, message, its fields, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line (no newline)."""
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in line:
                line[key] = _redacted(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def _redacted(value: Any) -> Any:
    """Return a structured field with secrets masked in its text, kept as JSON types."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v) for v in value]
    return redact(str(value))


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    return numeric


def _secret_values(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
    elif isinstance(value, dict):
        yield from _secret_values(list(value.values()))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_values(item)


def _url_tokens(text: str) -> Iterable[str]:
    """Return the parts of a URL that ``_mask_url`` would hide (to catch them logged alone)."""
    match = _URL.fullmatch(text.strip())
    if match is None:
        return ()
    rest = match.group(2)
    tokens = []
    userinfo = _USERINFO.match(rest)
    if userinfo:
        user, _, password = userinfo.group(1).partition(":")
        tokens += [password] if password else [user]
        rest = rest[userinfo.end() :]
    tokens += [s for s in _SEGMENT.findall(rest) if _token_like(s)]
    return tokens


def _mask_url(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    userinfo = _USERINFO.match(rest)
    if userinfo:
        user, colon, _ = userinfo.group(1).partition(":")
        shown = f"{user}:{MASK}" if colon else MASK
        rest = f"{shown}@{rest[userinfo.end() :]}"
    path, question, query = rest.partition("?")
    rest = path + question + _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, query)
    rest = _SEGMENT.sub(lambda m: MASK if _token_like(m.group(0)) else m.group(0), rest)
    return scheme + rest


def _token_like(segment: str) -> bool:
    """Return whether a URL segment looks like a key: long, letters mixed with digits."""
    if segment == MASK or len(segment) < 16:
        return False
    if len(segment) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", segment):
        return True
    return any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment)
