"""Pydantic models: the one source of truth for manifests, results and CRD schemas.

Modules here are data only: no I/O, no network, no Kubernetes client.
"""
