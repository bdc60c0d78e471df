"""The config file: discovery, extending the defaults, overrides, secrets, readable errors."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, SettingsError

from moodring import feeds, metrics
from moodring.digest import schedule, wording
from moodring.errors import ConfigError
from moodring.expansion import PLACEHOLDERS, SECTIONS, Result, expand
from moodring.logs import MASK, looks_secret, redact, register_secrets
from moodring.notifyurls import config_urls, url_facts
from moodring.rules import templates
from moodring.settings import DEFAULT_CONFIG, FOR_EACH, METRICS, Expanded, Member, Settings
from moodring.times import parse_duration, write_duration

# Importing these registers what settings validates with: the feed sources, the metric
# types, the template check, and the digest's template, schedule and time zone checks.
REGISTERING = (feeds, metrics, schedule, templates, wording)

Loc = tuple[str | int, ...]

CONFIG_NAME = "moodring.yaml"
SYSTEM_CONFIG = Path("/etc/moodring") / CONFIG_NAME
CONFIG_VARIABLE = "MOODRING_CONFIG"
ENV_PREFIX = "MOODRING_"

# keys holding secrets (see resolve_secrets); each also comes as <name>_file, <name>_credential
SECRETS = frozenset({"url", "urls", "password", "api_key", "api_secret"})
SECRET_SOURCES = ("", "_file", "_credential")
# a systemd credential of this name adds its apprise URLs (one a line) to notify.urls
NOTIFY_CREDENTIAL = "notify_urls"
# ``extends: default`` builds a file on the shipped config; a rule given by name with
# ``remove: true`` leaves that shipped rule out
EXTENDS = "extends"
REMOVE = "remove"

# the keys of a dynamic watchlist (top: N) that show-config leaves out of an explicit one
DYNAMIC_KEYS = ("top", "volume_days", "exclude", "include", "refresh", "rest_url")

log = logging.getLogger("moodring.config")
_warned: set[Path] = set()


def config_candidates() -> tuple[Path, ...]:
    """Return where a config is looked for: ./, $XDG_CONFIG_HOME/moodring/, /etc/moodring/."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return (Path.cwd() / CONFIG_NAME, base / "moodring" / CONFIG_NAME, SYSTEM_CONFIG)


def find_config(explicit: Path | None = None) -> Path:
    """Return the config to use: ``-c``, $MOODRING_CONFIG, the first candidate, else built-in.

    A file named explicitly (``-c`` or $MOODRING_CONFIG) must exist: ConfigError otherwise.
    The candidates (``config_candidates``) are skipped when absent; with none of them
    present the built-in ``DEFAULT_CONFIG`` is used, which needs no API keys.
    """
    for given, how in ((explicit, "given with -c"), (os.environ.get(CONFIG_VARIABLE), None)):
        if not given:
            continue
        path = Path(given).expanduser()
        how = how or f"from ${CONFIG_VARIABLE}"
        if not path.exists():
            raise ConfigError(f"{path}: config file not found ({how})")
        if not path.is_file():
            raise ConfigError(f"{path}: not a file ({how})")
        return path
    return next((p for p in config_candidates() if p.is_file()), DEFAULT_CONFIG)


@dataclass(frozen=True)
class LoadedConfig:
    """A loaded config: the file, its settings and its values as written (secrets not read)."""

    file: Path
    settings: Settings
    written: dict[str, Any]


def load_settings(path: str | Path | None = None) -> Settings:
    """Load a YAML config (None: built-in), apply MOODRING_* variables and secret files.

    Raises ConfigError, whose message is the whole error block; safe to call again on reload
    (files, credentials and the environment are read afresh each time).

    A file starting with ``extends: default`` builds on the shipped config (``overlay``):
    it holds only what it changes. Order of precedence: a ``MOODRING_SECTION__KEY``
    variable over the YAML file, merged key by key (``MOODRING_MQTT__HOST`` keeps the file's
    ``mqtt.prefix``); JSON for lists and mappings
    (``MOODRING_NOTIFY__URLS='["tgram://..."]'``). Secrets are resolved by
    ``resolve_secrets`` after merging, so a variable may also name a secret file; then
    ``notify.config`` (apprise config files or URLs) adds its URLs to ``notify.urls``.
    """
    return load_config(path).settings


def load_config(path: str | Path | None = None) -> LoadedConfig:
    """Load a config as ``load_settings`` does; keep the values as written beside it."""
    file = Path(path).expanduser() if path is not None else DEFAULT_CONFIG
    raw, own, origins = _read_layers(file)
    env, origins.env = environment_overrides()
    # variables naming an entry the file lacks (``feeds.sol``: a member's) apply after expansion
    written, late = _merge(raw, _early(raw, env, early=True)), _early(raw, env, early=False)
    settings = _expanded_settings(written, late, file.parent, origins)
    _warn_if_exposed(file, own)
    register_secrets(settings)
    return LoadedConfig(file, settings, written)


def with_members(settings: Settings, members: Mapping[str, Sequence[Member]]) -> Settings:
    """Return ``settings`` expanded anew, a dynamic watchlist's templates for ``members``.

    Raises ConfigError when a member's expansion is invalid (a name another entry has).
    """
    found = settings.expansion
    base = found.base or Path.cwd()
    origins = ConfigOrigins(base / CONFIG_NAME, None, {})
    return _expanded_settings(found.written, found.late, base, origins, members)


def _expanded_settings(
    written: dict[str, Any],
    late: dict[str, Any],
    base: Path,
    origins: ConfigOrigins,
    members: Mapping[str, Sequence[Member]] | None = None,
) -> Settings:
    """Expand the templates of ``written`` (see ``moodring.expansion``) and validate them.

    The templates of a dynamic watchlist not ranked yet are checked with a stand-in member.
    """
    result = expand(written, members)
    if result.problems:
        raise ConfigError(format_errors(origins.file, result.problems, origins))
    settings = _validated(result, late, base, origins)
    if result.unranked:
        _validated(expand(written, members, stand_in=True), late, base, origins)
    templates = result.expansion.templates("rules")
    unknown = [
        t for t in (settings.digest.watchlist if settings.digest else ()) if t not in templates
    ]
    if unknown:
        known = ", ".join(templates) or "none"
        problems = [
            (
                ("digest", "watchlist", name),
                f"not a rule template of a watchlist (templates: {known})",
            )
            for name in unknown
        ]
        raise ConfigError(format_errors(origins.file, problems, origins))
    return settings.with_expansion(dataclasses.replace(result.expansion, late=late, base=base))


def _validated(
    result: Result, late: dict[str, Any], base: Path, origins: ConfigOrigins
) -> Settings:
    """Return the settings of expanded values; ConfigError naming each template's member."""
    origins.expanded = {
        loc: (template, _member_note(origin, origin.watchlist in result.stand_ins))
        for loc, (template, origin) in result.locs.items()
    }
    values = resolve_secrets(_merge(result.values, late), base, origins)
    try:
        return Settings(**apprise_configs(values, base, origins))
    except ValidationError as exc:
        problems = _problems(exc, origins)
        if origins.base is None and "feeds" not in values:  # changes that forgot to say so
            problems = [
                (loc, f"{text} (a file holding only changes starts with `extends: default`)")
                if loc == ("feeds",)
                else (loc, text)
                for loc, text in problems
            ]
        raise ConfigError(format_errors(origins.file, problems, origins)) from exc


def _member_note(origin: Expanded, stand_in: bool) -> str:
    if stand_in:
        return (
            f"checked with a stand-in member {origin.member.symbol}: "
            f"watchlist {origin.watchlist} is ranked at run time"
        )
    return f"member {origin.member.symbol} of watchlist {origin.watchlist}"


def _early(raw: dict[str, Any], env: dict[str, Any], *, early: bool) -> dict[str, Any]:
    """Return the overrides of entries the file has (``early``), or of those it lacks."""
    picked: dict[str, Any] = {}
    for key, value in env.items():
        section = raw.get(key)
        if key in SECTIONS[:3] and isinstance(value, dict) and isinstance(section, dict):
            part = {k: v for k, v in value.items() if (k in section) == early}
            if part:
                picked[key] = part
        elif early:
            picked[key] = value
    return picked


def config_error(
    file: Path, problems: Iterable[tuple[Loc, str]], settings: Settings | None = None
) -> ConfigError:
    """Return a ConfigError for problems found in a loaded config, naming lines or variables.

    With ``settings``, a problem of an expanded rule names its template and member.
    """
    try:
        _, _, origins = _read_layers(file)
    except ConfigError:
        origins = ConfigOrigins(file, None, {})
    _, origins.env = environment_overrides()
    if settings is not None:
        origins.expanded = _rule_templates(settings)
    return ConfigError(format_errors(file, problems, origins))


def _rule_templates(settings: Settings) -> dict[Loc, tuple[Loc, str]]:
    """Return each expanded rule's key path, its template's, and which member it is."""
    written = settings.expansion.written.get("rules")
    index = {
        rule.get("name"): i
        for i, rule in enumerate(written if isinstance(written, list) else [])
        if isinstance(rule, dict) and FOR_EACH in rule
    }
    found: dict[Loc, tuple[Loc, str]] = {}
    for i, rule in enumerate(settings.rules):
        origin = settings.origin("rules", rule.name)
        if origin is not None and origin.template in index:
            found[("rules", i)] = (("rules", index[origin.template]), _member_note(origin, False))
    return found


def _read_layers(file: Path) -> tuple[dict[str, Any], dict[str, Any], ConfigOrigins]:
    """Return a file's values (on the shipped ones if it extends them), its own, their origins."""
    text, raw = _read_yaml(file)
    origins = ConfigOrigins(file, text, {})
    if EXTENDS not in raw:
        return raw, raw, origins
    own = {key: value for key, value in raw.items() if key != EXTENDS}
    if raw[EXTENDS] != "default":
        raise ConfigError(
            format_errors(
                file,
                [((EXTENDS,), "only the shipped config can be extended: extends: default")],
                origins,
            )
        )
    base_text, base = _read_yaml(DEFAULT_CONFIG)
    merged, rules, problems = overlay(base, own)
    if problems:
        raise ConfigError(format_errors(file, problems, origins))
    origins.base = ConfigOrigins(DEFAULT_CONFIG, base_text, {})
    origins.rules = rules
    return merged, own, origins


RuleOrigin = tuple[int | None, int | None]  # a merged rule's index in the shipped list, the file's


def overlay(
    base: dict[str, Any], top: dict[str, Any]
) -> tuple[dict[str, Any], list[RuleOrigin], list[tuple[Loc, str]]]:
    """Return ``top`` laid over ``base``, where each merged rule came from, and any problems.

    Mappings merge key by key, a key set to null drops the base's (``digest: null``: no
    digest); a metric of another ``type`` replaces the base's whole. Lists are replaced, but
    ``rules``: a rule named as a base rule replaces the keys it gives (``metric``/
    ``condition`` and ``all``/``any`` replace each other; null drops a key) and keeps its
    place, or with ``remove: true`` leaves it out; other rules are added at the end.
    """
    merged = _overlay(base, {k: v for k, v in top.items() if k != "rules"}, ())
    base_rules, top_rules = base.get("rules"), top.get("rules")
    shipped = base_rules if isinstance(base_rules, list) else []
    if "rules" not in top:
        return merged, [(i, None) for i in range(len(shipped))], []
    if isinstance(base_rules, list) and isinstance(top_rules, list):
        merged["rules"], sources, problems = _overlay_rules(base_rules, top_rules)
        return merged, sources, problems
    merged.pop("rules", None)
    if top_rules is not None:
        merged["rules"] = top_rules
    count = len(top_rules) if isinstance(top_rules, list) else 0
    return merged, [(None, j) for j in range(count)], []


def _overlay(base: Any, top: Any, loc: Loc) -> Any:
    if not isinstance(base, dict) or not isinstance(top, dict):
        return top
    if (
        len(loc) == 2
        and loc[0] == "metrics"
        and top.get("type", base.get("type")) != base.get("type")
    ):
        return top  # another kind of metric: none of the base's parameters apply
    merged = dict(base)
    for key, value in top.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _overlay(merged.get(key), value, (*loc, key))
    return merged


_SINGLE_KEYS = ("metric", "condition")
_GROUP_KEYS = ("all", "any")


def _overlay_rules(
    base: list[Any], top: list[Any]
) -> tuple[list[Any], list[RuleOrigin], list[tuple[Loc, str]]]:
    """Lay the file's rules over the shipped ones by name (see ``overlay``)."""
    index = {r["name"]: i for i, r in enumerate(base) if isinstance(r, dict) and "name" in r}
    rules: list[Any] = list(base)
    sources: list[RuleOrigin] = [(i, None) for i in range(len(base))]
    removed: set[int] = set()
    problems: list[tuple[Loc, str]] = []
    named: set[str] = set()
    for j, rule in enumerate(top):
        rule = dict(rule) if isinstance(rule, dict) else rule
        name = rule.get("name") if isinstance(rule, dict) else None
        remove = rule.pop(REMOVE, False) if isinstance(rule, dict) else False
        if remove not in (True, False):
            problems.append((("rules", j, REMOVE), "remove takes true (or false)"))
            continue
        if isinstance(name, str) and name in named:
            problems.append((("rules", j, "name"), f"{name!r} is given twice"))
            continue
        if not isinstance(name, str) or name not in index:
            if remove:
                problems.append(
                    (("rules", j, REMOVE), f"no shipped rule is named {name!r} to remove")
                )
            rules.append(rule)
            sources.append((None, j))
            continue
        named.add(name)
        i = index[name]
        if remove:
            extra = sorted(set(rule) - {"name"})
            if extra:
                problems.append(
                    (("rules", j, REMOVE), f"a removed rule takes no other keys ({extra})")
                )
            removed.add(i)
            continue
        changed = dict(rules[i])
        if any(key in rule for key in _GROUP_KEYS):  # a composite now: all or any, alone
            replaced: tuple[str, ...] = (*_SINGLE_KEYS, *_GROUP_KEYS)
        else:
            replaced = _GROUP_KEYS if any(key in rule for key in _SINGLE_KEYS) else ()
        for key in replaced:
            changed.pop(key, None)
        for key, value in rule.items():
            if value is None:
                changed.pop(key, None)
            else:
                changed[key] = value
        rules[i] = changed
        sources[i] = (i, j)
    kept = [n for n in range(len(rules)) if n not in removed]
    return [rules[n] for n in kept], [sources[n] for n in kept], problems


def environment_overrides() -> tuple[dict[str, Any], dict[Loc, str]]:
    """Return the MOODRING_* overrides as nested values, and each variable's key path."""
    names: dict[Loc, str] = {}
    for name in os.environ:
        if name.upper().startswith(ENV_PREFIX):
            path = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
            if path[0] in Settings.model_fields:
                names[path] = name
    try:
        values = EnvSettingsSource(Settings)()
    except SettingsError as exc:
        field = re.search(r'field "([^"]+)"', str(exc))
        culprits = [n for p, n in names.items() if field and p[0] == field.group(1)]
        raise ConfigError(
            f"{', '.join(sorted(culprits)) or ENV_PREFIX + '*'} (from environment): "
            f"not valid JSON ({exc.__cause__ or exc})"
        ) from None
    return values, names


def resolve_secrets(
    values: dict[str, Any], base: Path, origins: ConfigOrigins | None = None
) -> dict[str, Any]:
    """Return config values with every secret's ``*_file``/``*_credential`` key read in.

    Each secret (``notify.urls[].url``, ``mqtt.password``, ``feeds.<name>.api_key`` and
    ``api_secret``) is given in exactly one of three ways:

    - ``password: VALUE`` in the file, or ``MOODRING_MQTT__PASSWORD`` in the environment;
    - ``password_file: PATH``: the file's content, stripped; a relative PATH is relative to
      the config file's directory;
    - ``password_credential: NAME``: the systemd credential NAME, i.e. the file
      ``$CREDENTIALS_DIRECTORY/NAME`` (``LoadCredential=NAME:/path`` or
      ``LoadCredentialEncrypted=``/``SetCredential=`` in the unit).

    ``notify.urls_file`` and ``notify.urls_credential`` name a file of apprise URLs, one a
    line (blank lines and ``#`` comments skipped), added after ``notify.urls``; the
    credential ``notify_urls`` (the shipped unit's ``LoadCredential=``) is read when present
    without being named. A variable
    setting one form replaces the file's other forms. Errors (ConfigError) name the key path
    and the file read, never its content.
    """
    origins = origins or ConfigOrigins(base / CONFIG_NAME, None, {})
    problems: list[tuple[Loc, str]] = []
    reader = _SecretReader(base, origins, problems)
    values = dict(values)
    feeds = values.get("feeds")
    if isinstance(feeds, dict):
        values["feeds"] = {
            name: reader.single(feed, ("feeds", name), ("api_key", "api_secret"))
            for name, feed in feeds.items()
        }
    if isinstance(values.get("mqtt"), dict):
        values["mqtt"] = reader.single(values["mqtt"], ("mqtt",), ("password",))
    notify = values.get("notify", {})
    credentials = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if isinstance(notify, dict) and (Path(credentials) / NOTIFY_CREDENTIAL).is_file():
        # the unit's LoadCredential=notify_urls:... is picked up without a config key
        notify = {"urls_credential": NOTIFY_CREDENTIAL, **notify}
    if isinstance(notify, dict) and notify:
        notify = dict(notify)
        urls = notify.get("urls", [])
        if isinstance(urls, list | tuple):
            urls = [reader.single(u, ("notify", "urls", i), ("url",)) for i, u in enumerate(urls)]
            urls += reader.lines(notify, ("notify",), "urls", len(urls))
            notify["urls"] = urls
        for suffix in SECRET_SOURCES[1:]:
            notify.pop(f"urls{suffix}", None)
        values["notify"] = notify
    if problems:
        raise ConfigError(format_errors(origins.file, problems, origins))
    return values


def apprise_configs(
    values: dict[str, Any], base: Path, origins: ConfigOrigins | None = None
) -> dict[str, Any]:
    """Return config values with the URLs of ``notify.config``'s apprise configs in notify.urls.

    Each entry is an apprise config file (TEXT or YAML; a relative path is relative to the
    config file's directory) or a config URL (``http://``, ``https://``), read through
    apprise's ``AppriseConfig``; each URL found is added with the tags apprise gives it.
    Errors (ConfigError) name the entry's key path, never a URL's secrets.
    """
    notify = values.get("notify")
    if not isinstance(notify, dict):
        return values
    entries = notify.get("config")
    if not isinstance(entries, list | tuple) or not entries:
        return values
    origins = origins or ConfigOrigins(base / CONFIG_NAME, None, {})
    urls = list(notify.get("urls") or [])
    problems: list[tuple[Loc, str]] = []
    for i, entry in enumerate(entries):
        loc = ("notify", "config", i)
        if not isinstance(entry, str) or not entry.strip():
            problems.append((loc, "expected the path or URL of an apprise config"))
            continue
        try:
            found = _apprise_config_urls(entry.strip(), base)
        except ValueError as exc:
            problems.append((loc, str(exc)))
            continue
        for url, tags in found:
            origins.derived[("notify", "urls", len(urls))] = (loc, "from its apprise config")
            urls.append({"url": url, "tags": sorted(tags)})
    if problems:
        raise ConfigError(format_errors(origins.file, problems, origins))
    return {**values, "notify": {**notify, "urls": urls}}


def _apprise_config_urls(entry: str, base: Path) -> list[tuple[str, list[str]]]:
    """Return the URLs (and their tags) of one apprise config file or URL; ValueError if none."""
    source = entry
    if "://" not in entry:
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ValueError(f"no apprise config file at {path}")
        source = str(path)
    found = config_urls(source)
    shown = redact(entry)
    if found is None:
        raise ValueError(f"apprise cannot use {shown} as a config file or URL")
    if not found:
        raise ValueError(f"apprise found no notification URL in {shown}")
    return found


class _SecretReader:
    """Reads ``*_file`` and ``*_credential`` keys into values, collecting problems."""

    def __init__(self, base: Path, origins: ConfigOrigins, problems: list[tuple[Loc, str]]) -> None:
        self.base, self.origins, self.problems = base, origins, problems

    def single(self, section: Any, loc: Loc, names: tuple[str, ...]) -> Any:
        """Return ``section`` with each of ``names`` given directly, read from its source."""
        if not isinstance(section, dict):
            return section
        section = dict(section)
        for name in names:
            given = [name + suffix for suffix in SECRET_SOURCES if name + suffix in section]
            if len(given) > 1:
                self.problems.append(((*loc, given[1]), f"give only one of {', '.join(given)}"))
                continue
            if not given or given[0] == name:
                continue
            key = given[0]
            read = self.read(section.pop(key), (*loc, key))
            if read is not None:
                section[name] = read[0]
                self.origins.derived[(*loc, name)] = ((*loc, key), read[1])
        return section

    def lines(self, section: dict[str, Any], loc: Loc, name: str, first: int) -> list[str]:
        """Return the non-blank, non-comment lines of ``name_file`` and ``name_credential``."""
        found: list[str] = []
        for suffix in SECRET_SOURCES[1:]:
            key = name + suffix
            if key not in section:
                continue
            read = self.read(section[key], (*loc, key))
            text, how = read or ("", "")
            for number, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    where = ((*loc, key), f"{how}, line {number}")
                    self.origins.derived[(*loc, name, first + len(found))] = where
                    found.append(line)
        return found

    def read(self, value: Any, loc: Loc) -> tuple[str, str] | None:
        """Return the stripped content of the file or credential named, and where it came from."""
        key = str(loc[-1])
        if not isinstance(value, str) or not value.strip():
            self.problems.append(
                (
                    loc,
                    "expected a file path"
                    if key.endswith("_file")
                    else "expected a credential name",
                )
            )
            return None
        if key.endswith("_credential"):
            folder = os.environ.get("CREDENTIALS_DIRECTORY", "")
            if not folder:
                wanted = f"systemd credential {value!r} wanted, but $CREDENTIALS_DIRECTORY"
                self.problems.append((loc, f"{wanted} is not set (see LoadCredential=)"))
                return None
            if "/" in value or value in (".", ".."):
                self.problems.append((loc, f"{value!r} is not a credential name"))
                return None
            path = Path(folder) / value
            how = f"from credential {value} ({path})"
        else:
            path = Path(value).expanduser()
            path = path if path.is_absolute() else self.base / path
            how = f"from file {path}"
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self.problems.append((loc, f"cannot read {path}: {reason}"))
            return None
        if not text:
            self.problems.append((loc, f"{path} is empty"))
            return None
        return text, how


def show_config(
    settings: Settings, written: dict[str, Any] | None = None, *, expanded: bool = False
) -> str:
    """Return the effective settings as YAML, every secret as ``***`` and URL tokens masked.

    Durations are shown as ``written`` has them (the values a config was loaded from), else
    in their shortest exact form (``7d``, ``1h30m``); a last comment names the state directory
    in use when ``state_dir`` is not set.
    The URLs ``notify.config`` brought are left out, as the key itself is shown.
    ``for_each`` templates are shown as written, or with ``expanded`` as the entries they
    expanded to (a dynamic watchlist's: for the members it was last ranked with).
    """
    plain = _plain(settings.model_dump(by_alias=True, exclude_none=True))
    for loc, seconds in _durations(settings, ()):
        given = _at(written, loc)
        shown = given if isinstance(given, str) and _seconds(given) == seconds else None
        _put(plain, loc, shown or write_duration(seconds))
    plain["metrics"] = {name: {"type": m.pop("type"), **m} for name, m in plain["metrics"].items()}
    if not plain["watchlists"]:
        del plain["watchlists"]
    for name, watchlist in settings.watchlists.items():
        # an explicit list shows its members, a dynamic one how it is ranked
        unused = ("members",) if watchlist.dynamic else DYNAMIC_KEYS
        plain["watchlists"][name] = {
            k: v for k, v in plain["watchlists"][name].items() if k not in unused
        }
    if settings.watchlists and not expanded:
        _unexpand(plain, settings)
    own_urls = _at(written, ("notify", "urls"))
    if settings.notify.config and isinstance(own_urls, list):
        plain["notify"]["urls"] = plain["notify"]["urls"][: len(own_urls)]
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=100)
    if settings.state_dir is None:  # a comment: loading the output back changes nothing
        text += f"# state_dir is not set: {settings.resolved_state_dir()} is used\n"
    return redact(text)


def _durations(model: BaseModel, loc: Loc) -> Iterator[tuple[Loc, float]]:
    """Yield the key path and seconds of every duration set in ``model`` and its sections."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        here = (*loc, field.alias or name)
        if isinstance(value, float) and _is_duration(field):
            yield here, value
        elif isinstance(value, BaseModel):
            yield from _durations(value, here)
        elif isinstance(value, dict | tuple):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(item, BaseModel):
                    yield from _durations(item, (*here, key))


def _is_duration(field: FieldInfo) -> bool:
    """Return whether a field's value is parsed by ``parse_duration`` (also inside ``| None``)."""
    found = list(field.metadata)
    for arg in get_args(field.annotation):
        found += getattr(arg, "__metadata__", ())
    return any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in found)


def _seconds(text: str) -> float | None:
    try:
        return parse_duration(text)
    except ValueError:
        return None


def _at(values: Any, loc: Loc) -> Any:
    """Return the value at a key path of nested mappings and lists, or None."""
    for part in loc:
        if isinstance(values, dict):
            values = values.get(part)
        elif isinstance(values, list) and isinstance(part, int) and 0 <= part < len(values):
            values = values[part]
        else:
            return None
    return values


def _put(values: Any, loc: Loc, value: Any) -> None:
    parent = _at(values, loc[:-1])
    key = loc[-1]
    if isinstance(parent, list):
        if isinstance(key, int):
            parent[key] = value
    elif isinstance(parent, dict):
        parent[key] = value


def _unexpand(plain: dict[str, Any], settings: Settings) -> None:
    """Put each template back, as written, in place of the entries it expanded to."""
    written = settings.expansion.written
    for section in SECTIONS:
        entries, shown = written.get(section), plain.get(section)
        if section == "rules" and isinstance(entries, list) and isinstance(shown, list):
            by_name = {rule["name"]: rule for rule in shown}
            kept = [_masked(e) if _templated(e) else by_name.get(e.get("name")) for e in entries]
            plain[section] = [rule for rule in kept if rule is not None]
        elif isinstance(entries, dict) and isinstance(shown, dict):
            made = {name for (where, name) in settings.expansion.names if where == section}
            out = {
                str(key): _masked(entry) if _templated(entry) else shown.get(str(key))
                for key, entry in entries.items()
            }
            out.update({k: v for k, v in shown.items() if k not in made and k not in out})
            plain[section] = {k: v for k, v in out.items() if v is not None}


def _templated(entry: Any) -> bool:
    return isinstance(entry, dict) and FOR_EACH in entry


def _masked(value: Any) -> Any:
    """Return a template as written with the values of secret keys as ``***``."""
    if isinstance(value, dict) and len(value) == 1 and None in value.values():
        key = next(iter(value))
        if key in PLACEHOLDERS:  # an unquoted {base}, as YAML read it
            return f"{{{key}}}"
    if isinstance(value, dict):
        return {
            str(k): MASK if _secret_name(str(k)) is not None else _masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def format_errors(
    file: Path,
    errors: ValidationError | Iterable[tuple[Loc, str]],
    origins: ConfigOrigins | None = None,
) -> str:
    """Render config errors as one block: the file, then ``key.path (where): message`` lines.

    ``where`` is the YAML line of the key (or of its nearest parent present in the file),
    the environment variable that set it, or the secret file it was read from.
    """
    problems = _problems(errors, origins) if isinstance(errors, ValidationError) else [*errors]
    if origins is not None and origins.expanded:
        problems = origins.templated(problems)
    lines = [f"{file}: invalid configuration ({len(problems)} error(s))"]
    for loc, message in problems:
        path = ".".join(str(part) for part in loc) or "<root>"
        where = origins.describe(loc) if origins is not None else ""
        lines.append(f"  {path}{f' ({where})' if where else ''}: {message}")
    return "\n".join(lines)


class ConfigOrigins:
    """Where each value of a loaded config came from: a YAML line, a variable, a file.

    For a file that extends the shipped config, ``base`` holds the shipped file's origins
    and ``rules`` where each merged rule came from (its index there, and in the file).
    """

    def __init__(self, file: Path, text: str | None, env: dict[Loc, str]) -> None:
        self.file, self.text, self.env = file, text, env
        self.derived: dict[Loc, tuple[Loc, str]] = {}  # secret -> (key it came by, how)
        self.base: ConfigOrigins | None = None
        self.rules: list[RuleOrigin] = []
        # an expanded entry's key path -> its for_each template's, and which member it is
        self.expanded: dict[Loc, tuple[Loc, str]] = {}
        self._notes: dict[Loc, str] = {}
        self._root: yaml.Node | None = None

    def templated(self, problems: Iterable[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
        """Return problems of expanded entries at their templates' key paths, once per path.

        The member named is the first that failed there (and how many more did).
        """
        found: dict[Loc, tuple[str, str, int]] = {}
        out: list[tuple[Loc, str]] = []
        for loc, message in problems:
            where, note = self.translate(loc)
            if not note:
                out.append((loc, message))
            elif where in found:
                first, said, more = found[where]
                found[where] = (first, said, more + 1)
            else:
                found[where] = (note, message, 0)
                out.append((where, message))
        for where, (note, _, more) in found.items():
            self._notes[where] = note + (f", and {more} more" if more else "")
        return out

    def translate(self, loc: Loc) -> tuple[Loc, str]:
        """Return the key path as written (a template's) of ``loc``, and the member it is."""
        if self._env_var(loc) is None:
            for length in range(len(loc), 0, -1):
                hit = self.expanded.get(loc[:length])
                if hit is not None:
                    return hit[0] + loc[length:], hit[1]
        return loc, ""

    def describe(self, loc: Loc) -> str:
        """Return where the value at ``loc`` was set: ``line 12``, a variable, a file."""
        note = self._notes.get(loc)
        if note is not None:
            return ", ".join(part for part in (self._setting(loc), note) if part)
        for length in range(len(loc), 0, -1):
            if loc[:length] in self.derived:
                key, how = self.derived[loc[:length]]
                var = self._env_var(key)
                if var is not None:
                    return f"{how}, via {var} from environment"
                where = self._where(key)
                at = f" at {where}" if where else ""
                return f"{how}, via {'.'.join(map(str, key))}{at}"
        return self._setting(loc)

    def knows(self, loc: Loc) -> bool:
        """Return whether ``loc`` itself was set by the YAML file(s) or a variable."""
        if self._env_var(loc) is not None:
            return True
        return any(layer._line(at)[1] for layer, at in self._layers(self.translate(loc)[0]))

    def _setting(self, loc: Loc) -> str:
        var = self._env_var(loc)
        if var is not None:
            return f"{var} from environment"
        return self._where(loc)

    def _where(self, loc: Loc) -> str:
        """Return ``line N`` of the key in the file, or ``line N of <shipped config>``.

        The file's own key wins, then the shipped one's; failing both, the nearest parent.
        """
        found = [(layer, *layer._line(at)) for layer, at in self._layers(loc)]
        best = next((f for f in found if f[2]), None) or next((f for f in found if f[1]), None)
        if best is None:
            return ""
        layer, line, _ = best
        return f"line {line}" if layer is self else f"line {line} of {layer.file}"

    def _layers(self, loc: Loc) -> Iterator[tuple[ConfigOrigins, Loc]]:
        """Yield the file (then the shipped config it extends) with ``loc`` as each has it."""
        if self.base is None or loc[:1] != ("rules",) or len(loc) < 2:
            yield self, loc
            if self.base is not None:
                yield self.base, loc
            return
        index = loc[1]
        if isinstance(index, int) and 0 <= index < len(self.rules):
            shipped, own = self.rules[index]
            if own is not None:
                yield self, ("rules", own, *loc[2:])
            if shipped is not None:
                yield self.base, ("rules", shipped, *loc[2:])

    def _env_var(self, loc: Loc) -> str | None:
        lowered = tuple(str(part).lower() for part in loc)
        best = max((p for p in self.env if lowered[: len(p)] == p), key=len, default=None)
        return None if best is None else self.env[best]

    def _line(self, loc: Loc) -> tuple[int | None, bool]:
        """Return the line of ``loc``'s key (or nearest parent's) and whether all was found."""
        if self._root is None and self.text is not None:
            try:
                self._root = yaml.compose(self.text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                self.text = None
        node, line = self._root, None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
                if pair is None:
                    return line, False
                node, line = pair[1], pair[0].start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return line, False
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line, False
        return line, node is not None


_EMBEDDED_PATH = re.compile(r"^([A-Za-z0-9_][\w.-]*): (.+)$", re.DOTALL)


def _problems(exc: ValidationError, origins: ConfigOrigins | None) -> list[tuple[Loc, str]]:
    """Return pydantic's errors as (key path, message); a path leading a message joins loc."""
    found = []
    for error in exc.errors():
        loc = _strip_tags(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        embedded = _EMBEDDED_PATH.match(message)
        if embedded and error["type"] == "value_error":
            sub = tuple(int(p) if p.isdigit() else p for p in embedded.group(1).split("."))
            if not loc or (origins is not None and origins.knows(loc + sub)):
                loc, message = loc + sub, embedded.group(2)
        found.append((loc, message))
    return found


def _strip_tags(loc: tuple[str | int, ...]) -> Loc:
    """Drop pydantic's metric-type tag (``metrics.x.mfi.period``) from an error location."""
    if len(loc) > 2 and loc[0] == "metrics" and loc[2] in METRICS:
        return loc[:2] + loc[3:]
    return tuple(loc)


def _read_yaml(file: Path) -> tuple[str, dict[str, Any]]:
    """Return a config file's text and its top-level mapping."""
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{file}: cannot read: {reason}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML{_yaml_where(exc)}") from None
    if raw is None:
        return text, {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: invalid configuration: expected a mapping of sections")
    return text, raw


def _yaml_where(exc: yaml.YAMLError) -> str:
    """Describe a YAML error by line and column; never quote the line (it may hold a secret)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f": {type(exc).__name__}"
    mark = exc.problem_mark
    text = f" at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        text += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return text


def _merge(base: Any, override: Any) -> Any:
    """Return ``override`` deep-merged into ``base``: mappings key by key, else replaced."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    merged = dict(base)
    for key, value in override.items():
        name = _secret_name(key)
        if name is not None:  # a variable giving a secret one way drops the file's other ways
            for suffix in SECRET_SOURCES:
                if name + suffix != key:
                    merged.pop(name + suffix, None)
        merged[key] = _merge(merged.get(key), value)
    return merged


def _secret_name(key: str) -> str | None:
    for suffix in SECRET_SOURCES[:0:-1]:
        if key.endswith(suffix) and key.removesuffix(suffix) in SECRETS:
            return key.removesuffix(suffix)
    return key if key in SECRETS else None


def _warn_if_exposed(file: Path, raw: dict[str, Any]) -> None:
    """Log once per file when it holds secrets in plain text and others may read it."""
    if file in _warned:
        return
    try:
        mode = file.stat().st_mode
    except OSError:
        return
    if not mode & 0o077:
        return
    held = _plain_secrets(raw)
    if held:
        _warned.add(file)
        log.warning(
            "%s holds secrets (%s) and is readable by group or others (mode %03o): "
            "chmod 600 it, or move them to *_file or *_credential keys or MOODRING_* variables",
            file,
            ", ".join(held),
            mode & 0o777,
        )


def _plain_secrets(raw: dict[str, Any]) -> list[str]:
    """Return the key paths of secrets written in the YAML itself.

    Those are API keys, the MQTT password, notify URLs holding anything apprise keeps
    private (a token, a password, a key) and any other URL with credentials or tokens.
    """
    held = []
    feeds = raw.get("feeds")
    for name, feed in feeds.items() if isinstance(feeds, dict) else ():
        held += [f"feeds.{name}.{k}" for k in ("api_key", "api_secret") if _get(feed, k)]
    if _get(raw.get("mqtt"), "password"):
        held.append("mqtt.password")
    urls = _get(raw.get("notify"), "urls")
    for i, target in enumerate(urls if isinstance(urls, list) else ()):
        url = _get(target, "url") if isinstance(target, dict) else target
        if isinstance(url, str) and (looks_secret(url) or _apprise_keeps_private(url)):
            held.append(f"notify.urls.{i}")
    for path, text in _strings(raw, ()):
        key = ".".join(map(str, path))
        if looks_secret(text) and not any(key == h or key.startswith(f"{h}.") for h in held):
            held.append(key)
    return held


def _apprise_keeps_private(url: str) -> bool:
    """Return whether apprise's privacy form of ``url`` hides part of it (a token, a key)."""
    return bool(url_facts(url)["private"])


def _strings(value: Any, path: Loc) -> Iterable[tuple[Loc, str]]:
    """Yield every string in a YAML value with its key path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


def _get(section: Any, key: str) -> Any:
    return section.get(key) if isinstance(section, dict) else None


def _plain(value: Any) -> Any:
    """Return dumped settings as plain YAML types, each SecretStr as ``***``."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
