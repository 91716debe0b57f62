"""Packet-level pieces shared by the engine and capture: BPF attach, protocol banners.

Neither the engine nor capture depends on the other; what both need lives here.
Imports nothing above :mod:`portolan.models`.
"""
