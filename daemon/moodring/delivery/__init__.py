"""Delivery: the alert intake (silences), the durable outbox, apprise senders and MQTT."""
