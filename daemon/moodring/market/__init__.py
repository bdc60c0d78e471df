"""Market data: timeframes, ring buffers, bar builders and derived series."""
