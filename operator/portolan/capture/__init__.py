"""Packet capture: BPF filters compiled by libpcap, decoding, pcap/pcapng files with rotation.

Independent of the probe engine and of Kubernetes; ``portolan capture`` is its CLI.
"""
