"""Flows: pre- and post-processing steps around generation (the app track)."""
