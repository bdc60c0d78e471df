"""The layering of the README holds: each package imports only the packages below it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

PACKAGE = ROOT / "daemon" / "moodring"

# Leaf modules: anything may import them; they import only each other.
LEAVES = {
    "__init__",
    "backoff",
    "errors",
    "feedstate",
    "lifecycle",
    "logs",
    "notifyurls",
    "operators",
    "registry",
    "statedir",
    "times",
    "workerproc",
}
# What each package (or top-level module) may import besides the leaves. Lower layers
# never import higher ones; settings reads the parts that feeds, metrics, rules and digest
# register (moodring.registry) and imports none of them.
ALLOWED: dict[str, set[str]] = {
    "market": set(),
    "settings": {"market"},
    "metrics": {"market", "settings"},
    "engine": {"market", "metrics", "settings"},
    "rules": {"market", "settings"},
    "charts": {"settings"},
    "pipeline": {"engine", "rules", "market", "metrics", "settings"},
    "feeds": {"market", "metrics", "settings"},
    "delivery": {"rules", "charts", "market", "settings"},
    "backtest": {"pipeline", "engine", "rules", "metrics", "market", "settings"},
    "digest": {
        "backtest",
        "pipeline",
        "engine",
        "rules",
        "charts",
        "delivery",
        "metrics",
        "market",
        "settings",
    },
    "report": {"backtest", "rules", "market", "settings"},
    "expansion": {"market", "settings"},
    "configfile": {"expansion", "digest", "feeds", "rules", "metrics", "market", "settings"},
    "testing": {"feeds", "backtest", "market", "settings"},
    "service": {
        "configfile",
        "digest",
        "delivery",
        "feeds",
        "pipeline",
        "engine",
        "rules",
        "charts",
        "metrics",
        "market",
        "settings",
    },
    "demo": {"service", "configfile", "backtest", "rules", "charts", "settings", "testing"},
    "cli": {
        "demo",
        "service",
        "feeds",
        "configfile",
        "expansion",
        "digest",
        "backtest",
        "report",
        "delivery",
        "pipeline",
        "engine",
        "rules",
        "charts",
        "metrics",
        "market",
        "settings",
        "testing",
    },
    "__main__": {"cli"},  # python -m moodring
}


def unit(parts: list[str]) -> str:
    """Return the package or top-level module that a module path (after moodring.) is in."""
    return parts[0] if parts else "__init__"


def is_part(name: str) -> bool:
    """Return whether ``moodring.<name>`` is a module or package (not a name in __init__)."""
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def runtime_import(node: ast.AST) -> bool:
    """Return whether ``node`` is ``import_module("...")`` or ``__import__("...")``."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    first = node.args[0]
    return name in {"import_module", "__import__"} and (
        isinstance(first, ast.Constant) and isinstance(first.value, str)
    )


def imports() -> list[tuple[Path, int, str, str]]:
    """Return (file, line, importing unit, imported unit) for every moodring import."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        here = unit(parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
                if node.module == "moodring":  # from moodring import metrics, __version__
                    names = [
                        f"moodring.{alias.name}" for alias in node.names if is_part(alias.name)
                    ]
            elif runtime_import(node):  # importlib.import_module("moodring.feeds")
                names = [node.args[0].value]  # type: ignore[attr-defined]
            else:
                continue
            for name in names:
                top, *rest = name.split(".")
                if top == "moodring":
                    found.append((path, node.lineno, here, unit(rest)))
    return found


def test_every_package_has_a_place_in_the_layers() -> None:
    units = {unit(list(p.relative_to(PACKAGE).with_suffix("").parts)) for p in PACKAGE.glob("*")}
    units = {u for u in units if not u.startswith((".", "__pycache__")) and u != "defaults"}
    assert units - LEAVES - set(ALLOWED) == set()


def test_no_package_imports_one_above_it() -> None:
    wrong = []
    for path, line, here, there in imports():
        if here == there or there in LEAVES:
            continue
        allowed = set() if here in LEAVES else ALLOWED[here]
        if there not in allowed:
            wrong.append(f"{path.relative_to(PACKAGE)}:{line}: {here} imports {there}")
    assert wrong == []


def test_the_test_sees_imports() -> None:
    """The walk finds the known edges, function-level imports too (a test that cannot fail)."""
    edges = {(here, there) for _, _, here, there in imports()}
    assert {("pipeline", "rules"), ("engine", "metrics"), ("configfile", "metrics")} <= edges
    assert ("cli", "charts") in edges  # imported inside a function


def test_the_test_sees_runtime_imports() -> None:
    """An ``importlib.import_module("moodring.x")`` is an import like any other."""
    tree = ast.parse('import importlib\nimportlib.import_module("moodring.feeds")\n')
    calls = [node for node in ast.walk(tree) if runtime_import(node)]
    assert [call.args[0].value for call in calls] == ["moodring.feeds"]  # type: ignore[attr-defined]
