"""The backtest report: one self-contained HTML page (needs the ``report`` extra: bokeh)."""
