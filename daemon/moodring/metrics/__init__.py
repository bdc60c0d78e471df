"""Indicators: small classes updated on closed bars that can peek at the forming bar."""
