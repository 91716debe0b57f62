"""The probe engine: targets, ports, TCP connect, SYN and UDP probing, service identification.

:mod:`.plans` expands a ScanJob spec into a :class:`~.plans.Plan`;
:mod:`.scanning` runs its passes (TCP connect, optionally in forked
:mod:`.workers`; SYN; UDP; verification; service identification), feeding a
:mod:`.collecting` collector, and :mod:`.reporting` builds the report.
:mod:`.stopping` is the one SIGINT/SIGTERM handler the programs install.
Runs in shard pods and locally from the CLI alike, so it imports nothing from
kopf, kubernetes or prometheus_client; its input is a plan (``plans.Plan``,
expanded from a ScanJob spec or from the CLI's options), its outputs
``portolan.models.results`` records, streamed to callbacks; it never loads pydantic.
"""
