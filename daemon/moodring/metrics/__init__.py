"""Indicators: small classes updated on closed bars that can peek at the forming bar.

Each module defining a metric type registers it (``register_metric``) when imported;
importing this package imports every module in it, so every type is registered.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
