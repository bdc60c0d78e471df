"""moodring: a streaming alert daemon for cross-market divergence."""

__version__ = "0.1.0"
