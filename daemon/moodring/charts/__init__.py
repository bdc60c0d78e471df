"""Charts: typed chart models (an alert's, the digest's) and their PNG rendering."""
