"""``moodring test-alert`` against a real local receiver."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from moodring.cli import main
from moodring.settings import DEFAULT_CONFIG


def config_with(tmp_path: Path, *urls: str) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["notify"] = {"urls": list(urls)}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_test_alert_sends_a_chart_and_masks_the_url(tmp_path: Path, receiver, capsys) -> None:
    url = f"json://bob:Pa55word@127.0.0.1:{receiver.port}/hook"
    assert main(["test-alert", "-c", str(config_with(tmp_path, url))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK") and "Pa55word" not in out and "127.0.0.1" in out
    (payload,) = receiver.payloads
    assert payload["title"] == "moodring test alert"
    png = base64.b64decode(payload["attachments"][0]["base64"])
    assert png.startswith(b"\x89PNG") and 10_000 < len(png) < 300_000


def test_test_alert_reports_each_failure(tmp_path: Path, receiver, capsys) -> None:
    receiver.mode = "fail"
    good_then_bad = [f"json://127.0.0.1:{receiver.port}/a", f"json://127.0.0.1:{receiver.port}/b"]
    assert main(["test-alert", "-c", str(config_with(tmp_path, *good_then_bad))]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["FAILED", "FAILED"]


def test_test_alert_without_urls_is_a_usage_error(capsys) -> None:
    assert main(["test-alert"]) == 1
    assert "no notify.urls" in capsys.readouterr().err
