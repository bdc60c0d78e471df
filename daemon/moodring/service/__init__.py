"""The daemon: lifecycle, the feed-to-engine sink, bar recording."""
