"""Market data: bars, timeframes, ring buffers, bar builders, derived series, sessions."""
