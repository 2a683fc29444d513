"""Execution profiles, the local Prefect server and cluster manifests."""
