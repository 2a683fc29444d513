"""Prefect flows: short lists of task calls."""
