"""Rules: conditions on metric values, alert state machines, templates and silences."""
