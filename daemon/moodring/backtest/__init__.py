"""Backtests: history CSVs replayed through the engine."""
