"""Portolan: a Kubernetes-native network scanner.

The package is layered, highest to lowest::

    handlers -> reconcile -> {kube, metrics, evaluation, engine} -> models -> {errors, settings}

The engine (``portolan.engine``) never imports kopf or kubernetes, so the same
probe code runs in shard pods and locally from the CLI.
"""

__version__ = "0.1.0"
