"""Portolan: a Kubernetes-native network scanner.

Three programs share one engine; the layers, highest first (enforced by
``.importlinter`` in the test command)::

    launching                        the ``portolan`` entry point: parse, hand over
    cli | controller | shard         the programs, independent of each other
    kube                             the Kubernetes boundary: clients, fakes, builders, codecs, definitions
    engine | capture | evaluation    probing, packet capture, expectations and drift,
      | inventory                    and the inside view (listeners, owners, free ports)
    wire                             BPF attach and banner matchers shared by engine and capture
    models                           pydantic models: the source of the CRDs and the chart schema
    errors                           the one error hierarchy

* :mod:`portolan.cli` — local scans and capture (``portolan scan``, ``capture``, ``generate``);
* :mod:`portolan.controller` — the operator: kopf handlers delegating to one
  package per kind (``scanjobs``, ``scanschedules``);
* :mod:`portolan.shard` — what runs inside a shard pod.

Nothing below :mod:`portolan.kube` imports kopf, kubernetes or prometheus_client,
so the same probe code runs in shard pods and locally from the CLI; nothing
runs at import (settings, clock, API client and metrics registry are injected).
"""

__version__ = "0.1.0"
