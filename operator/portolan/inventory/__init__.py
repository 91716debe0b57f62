"""The inside view of a host: which sockets listen here, who owns them, which ports are free.

At the engine's layer: reads ``/proc`` and netlink, opens local sockets, and
imports nothing from kopf, kubernetes or prometheus_client, so both the CLI
and an inventory pod can use it.
"""
