"""Tornado request handlers; wired up only by the composition root (app.py)."""
