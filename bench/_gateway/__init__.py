"""Helpers of the gateway benchmark (bench/gateway.py): fake upstream, load generator, targets."""
