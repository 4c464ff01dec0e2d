"""Helpers for the local-engine benchmark (``bench/engine.py``) and soak test."""
