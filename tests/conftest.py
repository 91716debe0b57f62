"""Test-wide configuration: shared fixtures come from the ``harness`` package.

``harness`` (``tests/harness/``) holds the engine's network-namespace lab and the
real Kubernetes control plane; both are pytest plugins registered here.
"""

pytest_plugins = ["harness.labs", "harness.clusters", "harness.targethosts"]
