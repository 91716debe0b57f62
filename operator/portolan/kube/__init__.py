"""The Kubernetes boundary: every API call, and every Kubernetes object Portolan builds.

:mod:`~portolan.kube.clients` wraps the official client behind the
:class:`~portolan.kube.clients.Client` protocol and maps its errors once, to
:class:`portolan.errors.KubeError`; :mod:`~portolan.kube.fakes` is an
in-memory implementation of the same protocol for unit tests of the
controllers and the shard runtime.  :mod:`~portolan.kube.builders` builds
objects (shard pods, the scanner egress NetworkPolicy, ConfigMaps, Events,
owner references) without I/O; :mod:`~portolan.kube.codecs` encodes and decodes
the results spilled into ConfigMaps; :mod:`~portolan.kube.definitions`
generates the CRDs and the chart's generated files from the models.
"""
