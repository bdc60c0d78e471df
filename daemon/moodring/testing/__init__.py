"""Testing aids users run too: the fake exchange, the fake Yahoo and its equity bars."""
