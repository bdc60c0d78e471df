"""Delivery: the durable outbox, apprise senders and alert charts."""
