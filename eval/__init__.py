"""Evaluations of what ESM representations learn, run as jitted pipelines over frozen parameters."""
