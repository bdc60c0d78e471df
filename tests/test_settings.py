"""Config loading: the shipped default, and errors that name the key path and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moodring.settings import DEFAULT_CONFIG, ConfigError, DivergenceConfig, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_is_the_built_in_default() -> None:
    assert DEFAULT_CONFIG.read_text() == (ROOT / "config/moodring.yaml").read_text()
    settings = load_settings()
    assert set(settings.feeds) == {"eth", "btc", "rut"}
    assert settings.feeds["eth"].symbol == "ETH/USDT"
    assert settings.feeds["rut"].symbol == "^RUT" and settings.feeds["rut"].market == "equity"
    assert settings.series["ethbtc"].ratio == ("eth", "btc")
    m = settings.metrics
    assert list(m) == ["eth_rut_corr", "eth_mfi", "ethbtc_breakout", "eth_rut_divergence"]
    assert (m["eth_rut_corr"].type, m["eth_rut_corr"].a, m["eth_rut_corr"].b) == (
        "correlation", "eth", "rut",
    )  # fmt: skip
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
        (lambda c: c["metrics"]["eth_mfi"].update(type="rsi"), "metrics.eth_mfi"),
        (lambda c: c["metrics"]["eth_mfi"].update(series="sol"), "metrics.eth_mfi.series"),
        (lambda c: c["metrics"]["eth_rut_corr"].update(b="spx"), "metrics.eth_rut_corr.b"),
        (lambda c: c["metrics"]["eth_mfi"].update(series="ethbtc"), "MFI needs volume"),
        (lambda c: c["series"]["ethbtc"].update(ratio=["eth", "sol"]), "series.ethbtc.ratio.1"),
        (lambda c: c["feeds"]["eth"].update(market="forex"), "feeds.eth.market"),
    ],
    ids=["typo-metric", "typo-feed", "typo-top", "type", "range", "timeframe", "metric-type",
         "unknown-series", "unknown-pair", "mfi-of-ratio", "ratio-leg", "market"],
)  # fmt: skip
def test_bad_config_names_the_key_path_and_the_file(tmp_path: Path, mutate, expected) -> None:
    config = base()
    mutate(config)
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


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
