"""The daemon: its parts composed and reloaded, and what it runs besides the pipeline.

The bar clock, the feed-to-pipeline sink, bar recording, catch-up after a restart,
sd_notify, telemetry over HTTP and state snapshots.
"""
