"""The digest: a scheduled plain-language summary of the metrics, with a four-panel chart."""
