"""Modules in tests/support keep out of the stdlib's names."""

from __future__ import annotations

import sys

from tests.support.paths import ROOT


def test_no_support_module_hides_a_stdlib_module() -> None:
    # driver scripts run from tests/support, which puts it first on their sys.path: a
    # support module named like a stdlib one (http.py did) replaces it in their imports
    names = {path.stem for path in (ROOT / "tests" / "support").glob("*.py")}
    assert names, "no support modules found"
    assert not names & sys.stdlib_module_names
