"""The probe engine: targets, ports, TCP connect and UDP probing, service identification.

Runs in shard pods and locally from the CLI alike, so it imports nothing from
kopf or kubernetes; its only inputs are models and settings, its outputs are
``portolan.models.results`` objects streamed to callbacks.
"""
