"""The operator (a program): kopf handlers and the controllers they delegate to.

:mod:`~portolan.controller.handlers` registers thin kopf handlers; each kind has
a package of its own — :mod:`~portolan.controller.scanjobs` (planning a job
into shards, reconciling it) and :mod:`~portolan.controller.scanschedules`
(cron, runs and drift).  :mod:`~portolan.controller.configuring` reads the
settings file once at start-up, :mod:`~portolan.controller.metrics` holds the
Prometheus metrics on an injected registry.  Only this package imports kopf
and prometheus_client.
"""
