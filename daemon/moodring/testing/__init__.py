"""Testing aids users run too: the fake exchange."""
