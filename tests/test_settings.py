"""Config loading: the shipped default, and errors that name the key path and the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import moodring.configfile
from moodring.configfile import ConfigError, find_config, load_settings, show_config
from moodring.metrics.divergence import DivergenceConfig
from moodring.settings import DEFAULT_CONFIG
from tests.support.paths import ROOT

TG_TOKEN = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TG_URL = f"tgram://123456789:{TG_TOKEN}/12345"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MOODRING_* variables, credentials or user config from the machine running the tests."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("MOODRING_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(moodring.configfile, "SYSTEM_CONFIG", tmp_path / "etc" / "moodring.yaml")


def test_shipped_config_is_the_built_in_default() -> None:
    assert DEFAULT_CONFIG.read_text() == (ROOT / "config/moodring.yaml").read_text()
    settings = load_settings()
    assert set(settings.feeds) == {"eth", "btc", "rut"}
    assert settings.feeds["eth"].symbol == "ETH/USDT"
    assert settings.feeds["rut"].symbol == "^RUT" and settings.feeds["rut"].market == "equity"
    assert settings.series["ethbtc"].ratio == ("eth", "btc")
    m = settings.metrics
    assert list(m) == [
        "eth_rut_corr",
        "eth_mfi",
        "ethbtc_breakout",
        "eth_rut_divergence",
        "eth_rut_corr_90",
        "ethbtc_chg_30",
        "ethbtc_chg_90",
    ]
    assert (m["eth_rut_corr"].type, m["eth_rut_corr"].a, m["eth_rut_corr"].b) == (
        "correlation",
        "eth",
        "rut",
    )
    assert (m["eth_rut_corr"].timeframe, m["eth_rut_corr"].window) == ("1d", 30)
    assert (m["eth_mfi"].series, m["eth_mfi"].timeframe, m["eth_mfi"].period) == ("eth", "1d", 14)
    assert (m["ethbtc_breakout"].series, m["ethbtc_breakout"].lookback) == ("ethbtc", 20)
    assert isinstance(m["eth_rut_divergence"], DivergenceConfig)
    assert m["eth_rut_divergence"].window == 30


def write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def base() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["metrics"]["eth_mfi"].update(perod=14), "metrics.eth_mfi.perod: unknown key"),
        (lambda c: c["feeds"]["eth"].update(symbl="X"), "feeds.eth.symbl: unknown key"),
        (lambda c: c.update(metric={}), "metric: unknown key"),
        (lambda c: c["metrics"]["eth_mfi"].update(period="fourteen"), "metrics.eth_mfi.period"),
        (lambda c: c["metrics"]["eth_mfi"].update(period=1), "metrics.eth_mfi.period"),
        (lambda c: c["metrics"]["eth_mfi"].update(timeframe="1x"), "metrics.eth_mfi.timeframe"),
        (lambda c: c["metrics"]["eth_mfi"].update(type="kama"), "metrics.eth_mfi"),
        (lambda c: c["metrics"]["eth_mfi"].update(series="sol"), "metrics.eth_mfi.series"),
        (lambda c: c["metrics"]["eth_rut_corr"].update(b="spx"), "metrics.eth_rut_corr.b"),
        (lambda c: c["metrics"]["eth_mfi"].update(series="ethbtc"), "MFI needs volume"),
        (lambda c: c["series"]["ethbtc"].update(ratio=["eth", "sol"]), "series.ethbtc.ratio.1"),
        (lambda c: c["feeds"]["eth"].update(market="forex"), "feeds.eth.market"),
        (lambda c: c["feeds"]["rut"].update(calendar="lse"), "feeds.rut.calendar"),
        (lambda c: c["feeds"]["eth"].update(calendar="nyse"), "calendar: a crypto market"),
        (lambda c: c["feeds"]["eth"].update(max_jump=0), "feeds.eth.max_jump"),
    ],
    ids=[
        "typo-metric",
        "typo-feed",
        "typo-top",
        "type",
        "range",
        "timeframe",
        "metric-type",
        "unknown-series",
        "unknown-pair",
        "mfi-of-ratio",
        "ratio-leg",
        "market",
        "calendar",
        "crypto-calendar",
        "max-jump",
    ],
)
def test_bad_config_names_the_key_path_and_the_file(tmp_path: Path, mutate, expected) -> None:
    config = base()
    mutate(config)
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert str(path) in message
    assert expected in re.sub(r" \(line \d+\)", "", message)
    assert_lines_point_at_keys(path, message)


def assert_lines_point_at_keys(path: Path, message: str) -> None:
    """Every error line says ``(line N)`` and line N of the file holds the key it names."""
    text = path.read_text().splitlines()
    errors = message.splitlines()[1:]
    assert errors
    for error in errors:
        found = re.match(r"^  (\S+) \(line (\d+)\): \S", error)
        assert found, error
        key = found.group(1).rsplit(".", 1)[-1]
        if not key.isdigit():
            assert re.search(rf"\b{re.escape(key)}:", text[int(found.group(2)) - 1]), error


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_yaml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("feeds: {eth: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(path)


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOODRING_FEEDS__ETH__EXCHANGE", "kraken")
    assert load_settings().feeds["eth"].exchange == "kraken"


# --- discovery ---------------------------------------------------------------------------


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, xdg, etc = tmp_path / "work", tmp_path / "xdg" / "moodring", tmp_path / "etc"
    for folder in (work, xdg, etc):
        folder.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert find_config(None) == DEFAULT_CONFIG
    (etc / "moodring.yaml").write_text("feeds: {}\n")
    assert find_config(None) == etc / "moodring.yaml"
    (xdg / "moodring.yaml").write_text("feeds: {}\n")
    assert find_config(None) == xdg / "moodring.yaml"
    (work / "moodring.yaml").write_text("feeds: {}\n")
    assert find_config(None) == work / "moodring.yaml"
    env = tmp_path / "env.yaml"
    env.write_text("feeds: {}\n")
    monkeypatch.setenv("MOODRING_CONFIG", str(env))
    assert find_config(None) == env
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("feeds: {}\n")
    assert find_config(explicit) == explicit


def test_xdg_defaults_to_dot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "home" / ".config" / "moodring" / "moodring.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("feeds: {}\n")
    assert find_config(None) == user


def test_explicit_missing_files_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "moodring.yaml").write_text("feeds: {}\n")  # must not be fallen back to
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found \(given with -c\)"):
        find_config(tmp_path / "nope.yaml")
    monkeypatch.setenv("MOODRING_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=r"gone\.yaml: config file not found .*MOODRING_CONFIG"):
        find_config(None)


# --- line numbers ------------------------------------------------------------------------

RULES_CONFIG = """\
feeds:
  eth: {symbol: ETH/USDT}
  btc: {symbol: BTC/USDT}
metrics:
  corr: {type: correlation, a: eth, b: btc}
rules:
  - name: one
    metric: corr
    condition: {below: 0.3}
  - name: two
    metric: corr
    condition:
      above: 0.8
  - name: three
    metric: corr
    condition:
      below: lots
"""


def test_errors_carry_the_yaml_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(RULES_CONFIG)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value).splitlines()[1] == (
        "  rules.2.condition.below (line 17): Input should be a valid number, "
        "unable to parse string as a number"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "metric: corr\n    condition:\n      above",
            "metric: nope\n    condition:\n      above",
            "  rules.1.metric (line 11): unknown metric output 'nope'",
        ),
        ("b: btc}", "b: sol}", "  metrics.corr.b (line 5): unknown series 'sol'"),
        (
            "  - name: two\n",
            "  - name: two\n    title: '{{ nope }}'\n",
            "  rules.1.title (line 11): unknown name(s) nope",
        ),
        (
            "  btc: {symbol: BTC/USDT}",
            "  btc: {symbl: BTC/USDT}",
            "  feeds.btc.symbl (line 3): unknown key (typo?)",
        ),
        (
            "  btc: {symbol: BTC/USDT}",
            "  btc: {exchange: kraken}",
            "  feeds.btc.symbol (line 3): Field required",
        ),
    ],
    ids=["unknown-metric", "unknown-series", "template", "typo", "missing"],
)
def test_cross_reference_errors_point_at_their_key(tmp_path: Path, old, new, expected) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(RULES_CONFIG.replace("below: lots", "below: 0").replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert expected in str(err.value)


def test_yaml_syntax_error_has_the_line_but_never_the_text(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('feeds:\n  eth: {symbol: ETH/USDT}\nmqtt:\n  password: "hunter2-plain\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert message.startswith(f"{path}: invalid YAML at line ")
    assert "line 4" in message and "hunter2" not in message


# --- environment -------------------------------------------------------------------------


def with_sections(tmp_path: Path, **sections: object) -> Path:
    config = base()
    config.update(sections)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def test_environment_merges_into_the_file_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = with_sections(
        tmp_path,
        mqtt={"prefix": "home/moodring", "port": 1999, "tls": True},
        http={"host": "0.0.0.0"},
    )
    monkeypatch.setenv("MOODRING_MQTT__HOST", "broker.lan")
    monkeypatch.setenv("MOODRING_MQTT__PORT", "1884")
    monkeypatch.setenv("MOODRING_HTTP__PORT", "9800")
    monkeypatch.setenv("MOODRING_NOTIFY__URLS", '["json://127.0.0.1:9/hook"]')
    settings = load_settings(path)
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.lan", 1884)
    assert (settings.mqtt.prefix, settings.mqtt.tls) == ("home/moodring", True)
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 9800)
    assert [t.url.get_secret_value() for t in settings.notify.urls] == ["json://127.0.0.1:9/hook"]
    assert settings.notify.rate_per_minute == 20


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "MOODRING_MQTT__PORT",
            "abc",
            "  mqtt.port (MOODRING_MQTT__PORT from environment): Input should be a valid integer",
        ),
        (
            "MOODRING_MQTT__HOTS",
            "x",
            "  mqtt.hots (MOODRING_MQTT__HOTS from environment): unknown key",
        ),
        (
            "MOODRING_NOTIFY__URLS",
            '["bogus://sekrit-token-9"]',
            "  notify.urls.0.url (MOODRING_NOTIFY__URLS from environment): apprise cannot use",
        ),
        (
            "MOODRING_NOTIFY__URLS",
            "[sekrit-token-9",
            "MOODRING_NOTIFY__URLS (from environment): not valid JSON",
        ),
    ],
    ids=["type", "typo", "bad-url", "bad-json"],
)
def test_environment_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert expected in str(err.value)
    assert "sekrit" not in str(err.value)


def test_moodring_config_is_not_a_settings_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOODRING_CONFIG", str(DEFAULT_CONFIG))
    assert load_settings().feeds["eth"].symbol == "ETH/USDT"


# --- secrets -----------------------------------------------------------------------------


def test_secrets_from_files_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt").write_text("hunter2-mqtt\n")
    (tmp_path / "secrets" / "key").write_text("  alpaca-key-1  \n")
    (tmp_path / "urls").write_text(f"# telegram\n\n{TG_URL}\njson://127.0.0.1:9/b\n")
    (tmp_path / "one").write_text("json://bob:S3cretPa55@127.0.0.1:9/a\n")
    config = base()
    config["feeds"]["rut"] = {
        "symbol": "IWM",
        "source": "alpaca",
        "market": "equity",
        "api_key_file": "secrets/key",
        "api_secret": "plain-secret",
    }
    config["mqtt"] = {"host": "h", "password_file": "secrets/mqtt"}
    config["notify"] = {
        "urls": [{"url_file": str(tmp_path / "one"), "tags": ["ops"]}],
        "urls_file": "urls",
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(path)
    assert settings.mqtt.password.get_secret_value() == "hunter2-mqtt"
    assert settings.feeds["rut"].api_key.get_secret_value() == "alpaca-key-1"
    assert settings.feeds["rut"].api_secret.get_secret_value() == "plain-secret"
    urls = [(t.url.get_secret_value(), t.tags) for t in settings.notify.urls]
    assert urls == [
        ("json://bob:S3cretPa55@127.0.0.1:9/a", ("ops",)),
        (TG_URL, ()),
        ("json://127.0.0.1:9/b", ()),
    ]


def test_secrets_from_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("hunter2-cred")
    (creds / "apprise-urls").write_text(TG_URL + "\n")
    path = with_sections(
        tmp_path,
        mqtt={"host": "h", "password_credential": "mqtt-password"},
        notify={"urls_credential": "apprise-urls"},
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = load_settings(path)
    assert settings.mqtt.password.get_secret_value() == "hunter2-cred"
    assert [t.url.get_secret_value() for t in settings.notify.urls] == [TG_URL]
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "mqtt.password_credential (line " in str(err.value)
    assert "$CREDENTIALS_DIRECTORY is not set" in str(err.value)


def test_the_units_notify_urls_credential_is_read_unnamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    path = with_sections(tmp_path, notify={"urls": ["json://127.0.0.1:9/a"]})
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert [t.url.get_secret_value() for t in load_settings(path).notify.urls] == [
        "json://127.0.0.1:9/a"
    ]
    (creds / "notify_urls").write_text(f"# from LoadCredential=\n{TG_URL}\n")
    assert [t.url.get_secret_value() for t in load_settings(path).notify.urls] == [
        "json://127.0.0.1:9/a",
        TG_URL,
    ]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"feeds": {"eth": {"symbol": "ETH/USDT"}}}))
    assert [t.url.get_secret_value() for t in load_settings(bare).notify.urls] == [TG_URL]


@pytest.mark.parametrize(
    ("mqtt", "expected"),
    [
        ({"password_file": "gone"}, "mqtt.password_file (line {line}): cannot read {dir}/gone"),
        ({"password_file": "empty"}, "mqtt.password_file (line {line}): {dir}/empty is empty"),
        ({"password_credential": "nope"}, "mqtt.password_credential (line {line}): cannot read"),
        (
            {"password": "x", "password_file": "empty"},
            "mqtt.password_file (line {line}): give only one of password, password_file",
        ),
    ],
    ids=["missing", "empty", "no-credential", "both"],
)
def test_secret_errors_name_the_key_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mqtt: dict, expected: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    path = with_sections(tmp_path, mqtt={"host": "h", **mqtt})
    lines = path.read_text().splitlines()
    line = 1 + next(i for i, text in enumerate(lines) if text.startswith(f"  {list(mqtt)[-1]}:"))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}: invalid configuration")
    assert expected.format(line=line, dir=tmp_path) in str(err.value)


def test_a_bad_secret_from_a_file_is_named_by_file_and_line_not_content(tmp_path: Path) -> None:
    (tmp_path / "urls").write_text("json://127.0.0.1:9/ok\n\nbogus://sekrit-token-7\n")
    path = with_sections(tmp_path, notify={"urls": ["json://127.0.0.1:9/a"], "urls_file": "urls"})
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert f"notify.urls.2.url (from file {tmp_path / 'urls'}, line 3, via notify.urls_file" in (
        message
    )
    assert "sekrit" not in message


def test_a_variable_replaces_the_files_other_way_of_giving_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = with_sections(tmp_path, mqtt={"host": "h", "password_file": "/nonexistent"})
    monkeypatch.setenv("MOODRING_MQTT__PASSWORD", "from-env")
    assert load_settings(path).mqtt.password.get_secret_value() == "from-env"
    (tmp_path / "pw").write_text("from-env-file")
    monkeypatch.delenv("MOODRING_MQTT__PASSWORD")
    monkeypatch.setenv("MOODRING_MQTT__PASSWORD_FILE", str(tmp_path / "pw"))
    assert load_settings(path).mqtt.password.get_secret_value() == "from-env-file"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
def test_readable_file_with_secrets_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    path = with_sections(tmp_path, mqtt={"host": "h", "password": "hunter2-plain"})
    path.chmod(mode)
    with caplog.at_level("WARNING", logger="moodring"):
        load_settings(path)
        load_settings(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if mode & 0o077:
        assert len(warnings) == 1
        assert str(path) in warnings[0] and "mqtt.password" in warnings[0]
        assert "chmod 600" in warnings[0] and "hunter2" not in warnings[0]
    else:
        assert warnings == []


def test_no_warning_without_secrets_in_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pw").write_text("hunter2")
    path = with_sections(
        tmp_path,
        mqtt={"host": "h", "password_file": "pw"},
        notify={"urls": ["json://127.0.0.1:9/hook"]},
    )
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="moodring"):
        load_settings(path)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


# --- show_config -------------------------------------------------------------------------


def test_show_config_masks_secrets_and_loads_back(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("alpaca-key-XYZ")
    config = base()
    config["feeds"]["rut"] = {
        "symbol": "IWM",
        "source": "alpaca",
        "market": "equity",
        "api_key_file": "key",
        "api_secret": "alpaca-secret-XYZ",
        "ws_url": "wss://example.test/ws?token=ws-token-XYZ",
    }
    config["mqtt"] = {"host": "h", "password": "hunter2-XYZ"}
    config["notify"] = {"urls": [TG_URL]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    shown = show_config(load_settings(path))
    for secret in ("XYZ", TG_TOKEN):
        assert secret not in shown
    dumped = yaml.safe_load(shown)
    assert dumped["mqtt"]["password"] == "***"
    assert dumped["feeds"]["rut"]["api_key"] == "***"
    assert dumped["notify"]["urls"] == [{"url": "***", "tags": [], "format": "text"}]
    assert dumped["rules"][0]["for"] == 2 and "for_" not in shown
    assert list(dumped) == [
        "feeds",
        "series",
        "metrics",
        "rules",
        "notify",
        "mqtt",
        "http",
        "altseason",
        "digest",
    ]
    assert list(dumped["feeds"]) == ["eth", "btc", "rut"]
    assert next(iter(dumped["metrics"]["eth_mfi"])) == "type"


def test_show_config_output_is_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "shown.yaml"
    path.write_text(show_config(load_settings()))
    assert load_settings(path) == load_settings()
