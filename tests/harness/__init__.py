"""Test harness: the network-namespace lab and the real control plane, as pytest plugins."""
